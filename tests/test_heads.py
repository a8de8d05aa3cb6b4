"""
The opt-in adaptive softmax head (adaptive_head > 0): its log-probabilities are the ones it trains on,
the KV cache stays exact, train.py orders the classes by frequency and resumes exactly, sample.py
reads it, and a plain run's checkpoint keeps nanoGPT's model_args.
Run: python -m pytest tests/test_heads.py
"""

import collections
import re

import numpy as np
import pytest
import torch
from conftest import TINY, assert_user_error, run

from babygpt import checkpoint as ck
from babygpt import engine
from model import GPT, GPTConfig

CFG = dict(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True, adaptive_head=10)


@pytest.fixture
def model():
    """Weights large enough that every position's distribution differs, and a shuffled rank, so a
    token id looked up in the wrong direction (id as rank, rank as id) gives other numbers."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(**CFG)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.3)
        m.lm_head.rank.copy_(torch.randperm(CFG["vocab_size"]))
    return m


def test_generation_log_probs_give_the_training_loss(model):
    """The loss forward() trains on is the mean -log p(target) that generation samples from."""
    x, y = torch.randint(0, 50, (3, 16)), torch.randint(0, 50, (3, 16))
    with torch.no_grad():
        _, loss = model(x, y)
        nll = []
        for t in range(16):
            logprobs = model(x[:, :t + 1])[0][:, -1, :]  # (B, vocab) in token order
            assert torch.allclose(logprobs.exp().sum(-1), torch.ones(3), atol=1e-5), "not a distribution"
            nll.append(-logprobs.gather(1, y[:, [t]]))
    assert torch.allclose(loss, torch.cat(nll).mean(), atol=1e-5), f"{loss.item()} vs {torch.cat(nll).mean().item()}"


def test_ignored_targets_are_left_out_of_the_loss(model):
    x, y = torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16))
    ignored = y.clone()
    ignored[:, :8] = -1
    with torch.no_grad():
        logprobs = torch.stack([model(x[:, :t + 1])[0][:, -1, :] for t in range(8, 16)], 1)  # (B, 8, vocab)
        expected = -logprobs.gather(2, y[:, 8:, None]).mean()
        assert torch.allclose(model(x, ignored)[1], expected, atol=1e-5)


def test_cached_and_uncached_generate_the_same_tokens(model):
    idx = torch.randint(0, 50, (2, 3))
    new = 13  # 3 + 13 = block_size: no window sliding, so both paths must agree exactly
    greedy = [engine.generate(model, idx, new, temperature=0, kv_cache=c) for c in (True, False)]
    assert torch.equal(*greedy), "greedy decoding differs between cached and uncached generation"
    sampled = [engine.generate(model, idx, new, temperature=1.0, kv_cache=c,
                               generators=[torch.Generator().manual_seed(7 + i) for i in range(2)])
               for c in (True, False)]
    assert torch.equal(*sampled), "sampling with the same seed differs between cached and uncached"


def test_a_checkpoint_from_before_heads_py_loads(model):
    """Adaptive runs saved before the head became one module keep its token order at 'rank', not 'lm_head.rank'."""
    old = {("rank" if k == "lm_head.rank" else k): v for k, v in model.state_dict().items()}
    loaded = ck.model_from_checkpoint({"model": old, "model_args": CFG})
    assert torch.equal(loaded.lm_head.rank, model.lm_head.rank), "the saved token order should be loaded"


def test_mfu_counts_the_head_s_matmul_only(model):
    """The untied wte is a lookup and the tail runs for rare tokens only: neither counts as FLOPs per token."""
    idle = model.transformer.wte.weight.numel() + sum(p.numel() for p in model.lm_head.tail.parameters())
    assert model.lm_head.params_without_flops() == idle, f"{model.lm_head.params_without_flops()} != {idle}"
    plain = GPT(GPTConfig(**dict(CFG, adaptive_head=0)))
    assert plain.lm_head.params_without_flops() == 0, "GPT-2's tied head is all matmul"


# -----------------------------------------------------------------------------
# train.py and sample.py


def train(data, out, *args):
    return run("train.py", f"--dataset={data}", f"--out_dir={out}", *TINY, "--adaptive_head=8", *args)


def losses_by_iter(stdout):
    return {int(i): l for i, l in re.findall(r"^iter (\d+): loss (\S+),", stdout, re.M)}


def test_train_orders_by_frequency_resumes_exactly_and_samples(tmp_path, tiny_data):
    args = ["--max_iters=8", "--eval_interval=4", "--dropout=0.1", "--learning_rate=3e-3"]
    straight = train(tiny_data, tmp_path / "a", *args)
    first = train(tiny_data, tmp_path / "b", *args, "--max_iters=4")
    second = train(tiny_data, tmp_path / "b", *args, "--init_from=resume")
    for proc in (straight, first, second):
        assert proc.returncode == 0, proc.stderr
    whole, split = losses_by_iter(straight.stdout), {**losses_by_iter(first.stdout), **losses_by_iter(second.stdout)}
    assert sorted(whole) == list(range(8)) and whole == split, f"resume changed the losses:\n{whole}\n{split}"

    ckpt = ck.load_checkpoint(str(tmp_path / "a"))
    assert ckpt["model_args"]["adaptive_head"] == 8
    counts = collections.Counter(np.fromfile(f"{tiny_data}/train.bin", dtype=np.uint16).tolist())
    rank = ckpt["model"]["lm_head.rank"]
    by_rank = sorted(range(len(rank)), key=lambda i: rank[i].item())  # token ids, rank 0 first
    assert [counts[i] for i in by_rank] == sorted((counts[i] for i in by_rank), reverse=True), \
        "rank should order the tokens from the most to the least frequent in train.bin"
    assert torch.equal(ck.load_checkpoint(str(tmp_path / "b"))["model"]["lm_head.rank"], rank), "resume changed rank"

    proc = run("sample.py", f"--out_dir={tmp_path / 'a'}", "--num_samples=2", "--max_new_tokens=30",
               "--copy_report=False")
    assert proc.returncode == 0, proc.stderr
    texts = re.findall(r"(.*?)\n---------------\n", proc.stdout, re.S)
    assert len(texts) == 2 and all(len(t.strip("\n")) >= 30 for t in texts), proc.stdout


def test_a_plain_run_keeps_nanogpts_model_args(trained_run):
    """nanoGPT builds GPTConfig(**model_args): a key it does not know would stop it."""
    args = ck.load_checkpoint(trained_run["out"])["model_args"]
    assert set(args) == {"n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout"}, args


def test_bad_adaptive_head(tmp_path, tiny_data):
    assert_user_error(run("train.py", f"--dataset={tiny_data}", f"--out_dir={tmp_path / 'o'}", *TINY,
                          "--adaptive_head=-1"), "adaptive_head must be 0")


def test_a_vocabulary_below_the_cutoff_gets_the_full_softmax(tmp_path, tiny_data):
    """The CPU config (adaptive_head=1024) on a small alphabet trains, with a note, and resumes."""
    first = train(tiny_data, tmp_path / "o", "--adaptive_head=500", "--max_iters=4", "--eval_interval=2")
    assert first.returncode == 0, first.stderr
    assert "note: adaptive_head=500 is not below the vocabulary size" in first.stderr, first.stderr
    assert "adaptive_head" not in ck.load_checkpoint(str(tmp_path / "o"))["model_args"]
    again = train(tiny_data, tmp_path / "o", "--adaptive_head=500", "--max_iters=6", "--eval_interval=2",
                  "--init_from=resume")
    assert again.returncode == 0 and "resuming from" in again.stdout, again.stderr


def test_resume_of_a_plain_run_with_adaptive_head_says_what_differs(trained_run):
    proc = run("train.py", f"--dataset={trained_run['data']}", f"--out_dir={trained_run['out']}",
               "--init_from=resume", *TINY, "--adaptive_head=8")
    assert_user_error(proc, "adaptive_head 8 asked for", "model has 0")
