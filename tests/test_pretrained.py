"""
GPT-2 through transformers and tiktoken, offline: parity of GPT.from_pretrained with a tiny random
GPT2LMHeadModel, fine-tuning and sampling with --init_from=<folder>, and GPT-2 BPE with our own ranks.
Run: python -m pytest tests/test_pretrained.py
"""

import os

import pytest
import torch
from conftest import TINY, assert_user_error, run
from tiny_gpt2 import save_tiny_gpt2, tiny_encoding

from babygpt import checkpoint as ck
from babygpt import engine
from model import GPT

OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tiny_gpt2"))
    hf = save_tiny_gpt2(folder, vocab_size=tiny_encoding().n_vocab)
    return folder, hf


def test_logits_match_transformers(gpt2_dir):
    folder, hf = gpt2_dir
    ours = GPT.from_pretrained(folder).eval()
    x = torch.randint(0, hf.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(x).logits  # (B, T, vocab)
        got, _ = ours(x, x)  # targets given, so logits for every position
    assert want.abs().max() > 1.0, "logits this small would hide a wrong weight; raise initializer_range"
    diff = (got - want).abs().max().item()
    assert torch.allclose(got, want, atol=1e-5), f"logits differ from transformers' by up to {diff}"


def test_greedy_generation_matches_transformers(gpt2_dir):
    folder, hf = gpt2_dir
    ours = GPT.from_pretrained(folder).eval()
    x = torch.tensor([[5, 17, 200, 33]])
    want = hf.generate(x, max_new_tokens=24, do_sample=False, pad_token_id=hf.config.eos_token_id)
    got = ours.generate(x, max_new_tokens=24, temperature=0)
    assert got.tolist() == want.tolist(), f"greedy tokens differ:\nours {got.tolist()}\nhf   {want.tolist()}"
    cached = engine.generate(ours, x, 24, temperature=0)  # what sample.py runs: the key/value cache
    assert cached.tolist() == want.tolist(), \
        f"the engine's greedy tokens differ:\nours {cached.tolist()}\nhf   {want.tolist()}"


def test_bpe_codec_with_own_ranks_round_trips_and_decodes_samples(gpt2_dir):
    enc = tiny_encoding()
    encode, decode = ck.bpe_codec(enc)
    text = "the 宝玉 then<|endoftext|>he"
    ids = encode(text)
    assert enc.eot_token in ids, "<|endoftext|> in a prompt should become the special token"
    assert decode(ids) == text, f"BPE round trip changed the text: {decode(ids)!r}"
    model = GPT.from_pretrained(gpt2_dir[0]).eval()
    y = model.generate(torch.tensor([encode("the ")]), max_new_tokens=10, temperature=0)  # (1, T + 10)
    assert decode(y[0].tolist()).startswith("the "), "a sample should decode to the prompt plus new text"


@pytest.fixture(scope="module")
def bpe_dataset(tmp_path_factory):
    """A GPT-2-style dataset (no meta.pkl) from data/openwebtext/prepare.py with our own ranks."""
    base = tmp_path_factory.mktemp("bpe")
    from data.openwebtext import prepare  # its main() runs only as a script
    text = base / "a.txt"
    text.write_text("\n\n".join(f"the {i} then he said 宝玉" for i in range(200)), encoding="utf-8")
    prepare.prepare([str(text)], str(base / "ds"), tiny_encoding(), val_fraction=0.1, cache_dir=str(base / "c"))
    return str(base / "ds")


def test_train_finetunes_from_a_saved_gpt2(gpt2_dir, bpe_dataset, tmp_path):
    folder, hf = gpt2_dir
    out = str(tmp_path / "out")
    args = [a for a in TINY if not a.startswith(("--n_", "--block_size"))]  # the shape is GPT-2's
    proc = run("train.py", f"--init_from={folder}", f"--dataset={bpe_dataset}", f"--out_dir={out}",
               "--block_size=16", "--max_iters=30", "--eval_interval=30", "--learning_rate=3e-3", *args)
    assert proc.returncode == 0, f"fine-tuning failed:\n{proc.stderr}"
    losses = [float(l.split("val loss ")[1]) for l in proc.stdout.splitlines() if "val loss" in l]
    assert len(losses) == 2 and losses[1] < losses[0], f"val loss should fall while fine-tuning: {losses}"
    model = ck.model_from_checkpoint(ck.load_checkpoint(out))
    assert model.config.block_size == 16, "block_size 16 should crop GPT-2's 32 positions"
    assert model.config.vocab_size == hf.config.vocab_size, "fine-tuning keeps the pretrained vocabulary"
    assert not os.path.exists(os.path.join(out, "meta.pkl")), "a BPE run has no character vocabulary"


def test_train_refuses_a_longer_context_than_gpt2(gpt2_dir, bpe_dataset, tmp_path):
    args = [a for a in TINY if not a.startswith(("--n_", "--block_size"))]
    proc = run("train.py", f"--init_from={gpt2_dir[0]}", f"--dataset={bpe_dataset}", f"--out_dir={tmp_path}",
               "--block_size=64", *args)
    assert_user_error(proc, "block_size 64", "--block_size=32")


@pytest.mark.parametrize("offline_mode", [True, False])
def test_named_gpt2_offline_is_one_line(bpe_dataset, tmp_path, offline_mode):
    """Offline, a named GPT-2 that is not downloaded is one line at once: in HF_HUB_OFFLINE mode from
    transformers, else after one refused request to the hub (no retries; the proxy is a closed local port)."""
    env = dict(OFFLINE, HF_HOME=str(tmp_path / "hf"))
    if not offline_mode:
        del env["HF_HUB_OFFLINE"]
    proc = run("train.py", "--init_from=gpt2", f"--dataset={bpe_dataset}", f"--out_dir={tmp_path}", *TINY,
               env_extra=env, fresh=True)  # fresh: huggingface_hub reads HF_HUB_OFFLINE when imported
    assert_user_error(proc, "cannot load GPT-2 'gpt2'", "save_pretrained",
                      *([] if offline_mode else ["cannot be reached"]))
    assert "Retry" not in proc.stdout + proc.stderr, f"the hub should be asked once, not retried:\n{proc.stderr}"
    assert not os.path.exists(os.path.join(tmp_path, "ckpt.pt")), "a refused run should save nothing"


def test_sample_from_saved_gpt2_needs_tiktoken_and_says_so_offline(gpt2_dir, tmp_path):
    proc = run("sample.py", f"--init_from={gpt2_dir[0]}", "--device=cpu", "--num_samples=1",
               env_extra=dict(OFFLINE, TIKTOKEN_CACHE_DIR=str(tmp_path / "tk")))
    assert "GPT-2 BPE" in proc.stderr and "note:" in proc.stderr, f"the BPE fallback should be announced:\n{proc.stderr}"
    assert_user_error(proc, "tiktoken", "offline")
