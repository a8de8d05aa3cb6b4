"""
A prepared dataset as training sees it: train.bin and val.bin memory-mapped, random batches whose order
depends only on the seed and the iteration (so a resume sees the same ones), and the loss estimate over
fixed windows. Used by train.py and the benchmarks.
"""

import os

import numpy as np
import torch

from babygpt.checkpoint import dataset_dir, load_meta, token_dtype
from babygpt.errors import UserError


def load_dataset(data_dir, block_size):
    """Memory-map train.bin and val.bin with the dtype meta.pkl records (uint16 by default).
    A dataset without meta.pkl is GPT-2 BPE (data/openwebtext): meta and meta_path are then None."""
    meta_path = os.path.join(data_dir, "meta.pkl")
    if not all(os.path.isfile(os.path.join(data_dir, f)) for f in ("train.bin", "val.bin")):
        name = os.path.basename(os.path.normpath(data_dir))
        fix = (f"run python data/{name}/prepare.py first"  # a built-in corpus, with its own script
               if os.path.isfile(os.path.join(dataset_dir(name), "prepare.py")) else
               f"prepare your text into it: python data/chinese/prepare.py --input=your.txt --out_dir={data_dir}")
        raise UserError(f"dataset '{name}' is not prepared in {data_dir}; {fix}")
    meta, meta_path = (load_meta(meta_path), meta_path) if os.path.isfile(meta_path) else (None, None)
    bin_dtype = token_dtype(meta)
    splits = {}
    for split in ("train", "val"):
        path = os.path.join(data_dir, f"{split}.bin")
        if os.path.getsize(path) % bin_dtype.itemsize:
            raise UserError(f"{path} does not hold whole {bin_dtype} tokens; run the dataset's prepare.py again")
        splits[split] = np.memmap(path, dtype=bin_dtype, mode="r")
        if len(splits[split]) <= block_size:
            raise UserError(f"{split} split has {len(splits[split])} tokens, not more than block_size "
                            f"{block_size}; lower --block_size or prepare more text")
        # ids past the vocabulary mean meta.pkl is from another prepare run; the embedding would
        # fail mid-training with an index error. One pass over the memmap: ms per 100 MB once cached
        top = int(splits[split].max()) if meta else 0  # GPT-2 BPE data has no meta.pkl to check
        if meta and top >= meta["vocab_size"]:
            raise UserError(f"{path} holds token id {top} but {meta_path} has vocab_size {meta['vocab_size']}: "
                            "they come from different prepare runs; run the dataset's prepare.py again")
    return splits["train"], splits["val"], meta, meta_path


def get_batch(data, batch_size, block_size, generator, device):
    """batch_size random windows of data -> x, y (B, T) int64, y shifted one token right.
    The generator, not the global RNG, picks the windows, so the batch of an iteration
    depends only on the seed and the iteration number (a resumed run sees the same batches)."""
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator).tolist()
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])  # (B, T)
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])  # (B, T)
    if device.startswith("cuda"):
        # pinned memory lets the copy to the GPU overlap with compute
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def batch_generator(seed, iter_num, rank=0):
    """The RNG for one iteration's batches (see get_batch). Each DDP rank gets its own stream,
    so the ranks train on different windows; rank 0's batches are those of a one-process run."""
    return torch.Generator().manual_seed(seed * 1_000_003 + iter_num + rank * 1_000_000_007)


def eval_windows(n_tokens, block_size, count):
    """Start offsets of `count` non-overlapping windows spread evenly over a split, or of every
    window when the split holds fewer: a small val split (红楼梦's is 59k tokens) is then measured
    whole. Fixed offsets, so two evals differ only because the model changed; random windows
    overlap and repeat, and 20 random batches here scatter by about +-0.05."""
    total = (n_tokens - 1) // block_size  # a window needs block_size + 1 tokens: targets are shifted
    if count >= total:
        return np.arange(total) * block_size
    return np.arange(count) * total // count * block_size


@torch.no_grad()
def estimate_loss(model, splits, eval_iters, batch_size, block_size, device, ctx):
    """Mean loss of each split over up to eval_iters * batch_size fixed windows (see eval_windows),
    with dropout off. Every window has block_size targets, so the mean over windows is per token."""
    model.eval()
    out = {}
    for name, data in splits.items():
        starts = eval_windows(len(data), block_size, eval_iters * batch_size)
        total = 0.0
        for i in range(0, len(starts), batch_size):
            chunk = starts[i:i + batch_size]
            x = torch.from_numpy(np.stack([data[s:s + block_size] for s in chunk]).astype(np.int64))  # (B, T)
            y = torch.from_numpy(np.stack([data[s + 1:s + 1 + block_size] for s in chunk]).astype(np.int64))
            with ctx:
                _, loss = model(x.to(device), y.to(device))
            total += loss.item() * len(chunk)
        out[name] = total / len(starts)
    model.train()
    return out
