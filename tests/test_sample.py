"""
sample.py: the seed's output format, determinism, prompts and refusals.
Run: python -m pytest tests/test_sample.py
"""

import os
import re
import shutil

from conftest import assert_user_error, run

from babygpt import checkpoint as ck


def samples(stdout):
    """Split sample.py's output into [(text, N)] using its separator and shape lines."""
    parts = re.findall(r"(.*?)\n---------------\ntorch\.Size\(\[1, (\d+)\]\)\n", stdout, re.S)
    return [(text, int(n)) for text, n in parts]


def test_output_format_and_length(trained_run):
    proc = run("sample.py", f"--out_dir={trained_run['out']}", "--num_samples=3", "--max_new_tokens=40",
               "--start=宝玉", "--device=cpu")
    assert proc.returncode == 0, proc.stderr
    got = samples(proc.stdout)
    assert len(got) == 3, f"expected 3 samples in the seed's format:\n{proc.stdout}"
    meta = ck.load_meta(os.path.join(trained_run["out"], "meta.pkl"))
    for text, n in got:
        assert n == 2 + 40, f"torch.Size should count prompt + new tokens, got {n}"
        assert text.startswith("宝玉") and len(text) == 42, f"sample should be prompt + 40 characters: {text!r}"
        assert set(text) <= set(meta["stoi"]), "every character should come from the vocabulary"


def test_same_seed_same_text(trained_run):
    args = [f"--out_dir={trained_run['out']}", "--num_samples=2", "--max_new_tokens=30", "--device=cpu"]
    a, b = run("sample.py", *args), run("sample.py", *args)
    c = run("sample.py", *args, "--seed=7")
    assert a.stdout == b.stdout, "the same seed should give the same samples"
    assert a.stdout != c.stdout, "another seed should give other samples"


def test_prompt_from_file_and_default_start(trained_run, tmp_path):
    prompt = tmp_path / "p.txt"
    prompt.write_text("黛玉", encoding="utf-8")
    proc = run("sample.py", f"--out_dir={trained_run['out']}", f"--start=FILE:{prompt}", "--num_samples=1",
               "--max_new_tokens=5", "--device=cpu")
    assert proc.returncode == 0 and samples(proc.stdout)[0][0].startswith("黛玉"), proc.stdout + proc.stderr
    proc = run("sample.py", f"--out_dir={trained_run['out']}", "--num_samples=1", "--max_new_tokens=5", "--device=cpu")
    assert samples(proc.stdout)[0][0].startswith("\n") and samples(proc.stdout)[0][1] == 6, "default start is a newline"


def test_vocabulary_travels_with_the_run(trained_run, tmp_path):
    out = tmp_path / "moved"
    shutil.copytree(trained_run["out"], out)
    ckpt = ck.load_checkpoint(str(out))
    ckpt["config"]["dataset"] = "/no/such/dataset"  # the dataset folder is gone or was re-prepared
    ck.save_checkpoint(str(out), ckpt)
    proc = run("sample.py", f"--out_dir={out}", "--num_samples=1", "--max_new_tokens=5", "--device=cpu")
    assert proc.returncode == 0, f"sampling should use out_dir/meta.pkl: {proc.stderr}"
    os.remove(out / "meta.pkl")
    assert_user_error(run("sample.py", f"--out_dir={out}", "--device=cpu"), "meta.pkl")


def test_refusals(trained_run, tmp_path):
    assert_user_error(run("sample.py", f"--out_dir={tmp_path}"), "no checkpoint")
    assert_user_error(run("sample.py", f"--out_dir={trained_run['out']}", "--start=FILE:/no/such.txt"), "not found")
    assert_user_error(run("sample.py", f"--out_dir={trained_run['out']}", "--temperature=-1"), "temperature")
