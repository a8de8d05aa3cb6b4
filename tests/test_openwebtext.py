"""
data/openwebtext/prepare.py on local files (datasets' text and json loaders, tiktoken, num_proc, memmap).
Run: python -m pytest tests/test_openwebtext.py
"""

import json
import os
from collections import Counter

import numpy as np
from conftest import assert_user_error, run
from tiny_gpt2 import tiny_encoding

OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "TIKTOKEN_CACHE_DIR": ""}
DOCS = [f"the {i}th thing, 宝玉 said in the garden; then he left." for i in range(30)]


def load_prepare():
    from data.openwebtext import prepare  # its main() runs only as a script
    return prepare


def decoded_documents(enc, out_dir):
    """Every document in train.bin and val.bin, decoded and split at <|endoftext|>."""
    docs = {}
    for split in ("train", "val"):
        ids = np.fromfile(os.path.join(out_dir, f"{split}.bin"), dtype=np.uint16).tolist()
        assert ids and ids[-1] == enc.eot_token, f"{split}.bin should end with <|endoftext|>"
        docs[split] = [d.strip() for d in enc.decode(ids).split("<|endoftext|>")[:-1]]  # a file's last \n stays
    return docs


def test_text_files_tokenized_in_two_processes(tmp_path):
    prepare, enc = load_prepare(), tiny_encoding()
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("\n\n".join(DOCS[:20]) + "\n", encoding="utf-8")
    b.write_text("\n\n".join(DOCS[20:]) + "\n", encoding="utf-8")
    out = str(tmp_path / "owt")
    counts = prepare.prepare([str(a), str(b)], out, enc, num_proc=2, val_fraction=0.1,
                             cache_dir=str(tmp_path / "cache"))
    docs = decoded_documents(enc, out)
    assert Counter(docs["train"] + docs["val"]) == Counter(DOCS), "every paragraph should be one document, intact"
    assert len(docs["val"]) == 3, f"10% of 30 documents should be held out, got {len(docs['val'])}"
    train_ids = np.fromfile(os.path.join(out, "train.bin"), dtype=np.uint16)
    assert counts["train"] == len(train_ids), "the reported count should be the tokens written"
    assert train_ids.tolist().count(enc.eot_token) == 27, "one <|endoftext|> per training document"


def test_jsonl_file_with_text_field(tmp_path):
    prepare, enc = load_prepare(), tiny_encoding()
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(DOCS[:10])), encoding="utf-8")
    out = str(tmp_path / "owt")
    prepare.prepare([str(path)], out, enc, num_proc=1, val_fraction=0.2, cache_dir=str(tmp_path / "cache"))
    docs = decoded_documents(enc, out)
    assert Counter(docs["train"] + docs["val"]) == Counter(DOCS[:10]), "each JSON record should be one document"


def test_cli_refusals_are_one_line(tmp_path):
    proc = run("data/openwebtext/prepare.py", f"--data_files={tmp_path / 'none.txt'}", f"--out_dir={tmp_path}")
    assert_user_error(proc, "none.txt", "not found")
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n", encoding="utf-8")
    assert_user_error(run("data/openwebtext/prepare.py", f"--data_files={bad}"), ".txt")


def test_offline_without_tiktoken_cache_says_so(tmp_path):
    (tmp_path / "a.txt").write_text("\n\n".join(DOCS), encoding="utf-8")
    out = tmp_path / "owt"
    proc = run("data/openwebtext/prepare.py", f"--data_files={tmp_path / 'a.txt'}", f"--out_dir={out}",
               env_extra=dict(OFFLINE, TIKTOKEN_CACHE_DIR=str(tmp_path / "tk")))
    assert_user_error(proc, "tiktoken", "offline")
    assert not out.exists(), "a refused run should write nothing"
