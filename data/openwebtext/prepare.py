"""
Prepare OpenWebText (or your own text / JSON files) as GPT-2 BPE tokens for train.py, as nanoGPT does.

    python data/openwebtext/prepare.py                               # OpenWebText from the HF hub (~54 GB cache)
    python data/openwebtext/prepare.py --data_files=a.txt,b.txt      # local files, offline
    python data/openwebtext/prepare.py --data_files=docs.jsonl --num_proc=4
    python data/openwebtext/prepare.py --help

Writes train.bin and val.bin (uint16 GPT-2 token ids, each document followed by <|endoftext|>) and no
meta.pkl: train.py and sample.py read a dataset without one as GPT-2 BPE.
"""

import argparse
import os

import numpy as np
from tqdm import tqdm

from babygpt.checkpoint import gpt2_encoding
from babygpt.errors import UserError, run_main

HERE = os.path.dirname(os.path.abspath(__file__))

# the datasets library's own loader for each kind of local file
LOADERS = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json"}


def check_files(data_files):
    """The datasets loader name for data_files ('text' or 'json'), or a UserError saying what is wrong."""
    missing = [f for f in data_files if not os.path.isfile(f)]
    if missing:
        raise UserError(f"--data_files: {missing[0]} not found; give existing .txt, .json or .jsonl files")
    kinds = {LOADERS.get(os.path.splitext(f)[1].lower()) for f in data_files}
    if None in kinds or len(kinds) > 1:
        raise UserError(f"--data_files must all be .txt or all .json/.jsonl, got {', '.join(data_files)}")
    return kinds.pop()


def load_documents(data_files, cache_dir=None, num_proc=1):
    """A datasets.Dataset with a 'text' column: OpenWebText from the hub, or local files.
    Text files are split into documents at blank lines; JSON files need a 'text' field."""
    from datasets import load_dataset  # imported here so --help answers at once
    if not data_files:
        # nanoGPT's source: 8,013,769 documents; the hub download happens once, then it is cached
        return load_dataset("openwebtext", split="train", num_proc=num_proc, cache_dir=cache_dir)
    kind = check_files(data_files)
    extra = {"sample_by": "paragraph"} if kind == "text" else {}
    ds = load_dataset(kind, data_files=data_files, split="train", cache_dir=cache_dir, **extra)
    if "text" not in ds.column_names:
        raise UserError(f"{data_files[0]}: JSON records need a 'text' field, found {ds.column_names}")
    return ds


def split_documents(ds, val_fraction, seed):
    """{'train', 'val'} with a shuffled val_fraction of the documents (at least one) held out."""
    if len(ds) < 2:
        raise UserError(f"only {len(ds)} document(s); give at least two (separate them with a blank line)")
    n_val = max(1, round(len(ds) * val_fraction))
    split = ds.train_test_split(test_size=n_val, seed=seed, shuffle=True)
    return {"train": split["train"], "val": split["test"]}


def tokenize(split, enc, num_proc):
    """Each document -> its BPE ids + <|endoftext|>, in num_proc processes (the slow part)."""
    eot = enc.eot_token

    def process(example):
        ids = enc.encode_ordinary(example["text"])  # special tokens in the text stay plain text
        ids.append(eot)  # marks where one document ends and the next begins
        return {"ids": ids, "len": len(ids)}

    return split.map(process, remove_columns=split.column_names, desc="tokenizing", num_proc=num_proc)


def write_bin(tokens, path):
    """Concatenate every document's ids into one uint16 file, in shards so memory stays flat.
    Written beside path and renamed at the end: a failed run leaves the old file whole."""
    total = int(np.sum(tokens["len"], dtype=np.uint64))
    tmp = path + ".tmp"
    arr = np.memmap(tmp, dtype=np.uint16, mode="w+", shape=(total,))
    n_shards = min(1024, len(tokens))
    idx = 0
    for i in tqdm(range(n_shards), desc=f"writing {os.path.basename(path)}", disable=None):
        shard = tokens.shard(num_shards=n_shards, index=i, contiguous=True).with_format("numpy")
        ids = np.concatenate(shard["ids"])
        arr[idx:idx + len(ids)] = ids
        idx += len(ids)
    arr.flush()
    del arr
    os.replace(tmp, path)
    return total


def prepare(data_files, out_dir, enc, num_proc=1, val_fraction=0.0005, seed=2357, cache_dir=None):
    """The whole pipeline; returns {split: token count}. enc is a tiktoken Encoding (GPT-2's normally)."""
    if enc.n_vocab > 65536:
        raise UserError(f"the encoding has {enc.n_vocab} tokens; train.bin stores uint16, at most 65,536")
    splits = split_documents(load_documents(data_files, cache_dir, num_proc), val_fraction, seed)
    os.makedirs(out_dir, exist_ok=True)
    counts = {}
    for name, split in splits.items():
        counts[name] = write_bin(tokenize(split, enc, num_proc), os.path.join(out_dir, f"{name}.bin"))
        print(f"{name}.bin: {counts[name]:,} tokens from {len(split):,} documents")
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description="Tokenize OpenWebText or local files with GPT-2 BPE.")
    parser.add_argument("--data_files", default="", help="comma-separated local .txt or .json/.jsonl files "
                        "(default: OpenWebText from the Hugging Face hub)")
    parser.add_argument("--out_dir", default=HERE, help="where train.bin and val.bin go (default: this folder)")
    parser.add_argument("--num_proc", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="tokenizer processes (default: half the CPU cores)")
    parser.add_argument("--val_fraction", type=float, default=0.0005, help="share of documents held out (nanoGPT's)")
    parser.add_argument("--seed", type=int, default=2357, help="seed of the train/val shuffle")
    parser.add_argument("--cache_dir", default=None, help="datasets cache (default: ~/.cache/huggingface)")
    args = parser.parse_args(argv)
    if not 0 < args.val_fraction < 1 or args.num_proc < 1:
        raise UserError("--val_fraction must be in (0, 1) and --num_proc at least 1")
    data_files = [f for f in args.data_files.split(",") if f]
    if data_files:
        check_files(data_files)  # before tiktoken's download, which may be the slow or failing part
    prepare(data_files, args.out_dir, gpt2_encoding(), args.num_proc, args.val_fraction, args.seed, args.cache_dir)


if __name__ == "__main__":
    run_main(main)
