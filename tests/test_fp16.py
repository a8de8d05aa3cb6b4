"""
The GPU's float16 path (autocast + GradScaler), run on the CPU so CI exercises it without a GPU:
--dtype=float16 asked for by name is honoured on any device (slowly on a CPU, with a note saying so).
Run: python -m pytest tests/test_fp16.py
"""

import contextlib
import copy

import pytest
import torch
from conftest import TINY, run

from babygpt import checkpoint as ck
import train
from model import GPT, GPTConfig

@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50, dropout=0.0, bias=False))


def one_step(model, half, init_scale, grad_clip=1.0):
    """train.train_step on a fixed batch; returns (loss, grad norm before clipping, scaler)."""
    torch.manual_seed(1)
    x, y = torch.randint(50, (4, 16)), torch.randint(50, (4, 16))
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, enabled=half)
    ctx = torch.autocast("cpu", dtype=torch.float16) if half else contextlib.nullcontext()
    loss, norm = train.train_step(model, optimizer, scaler, lambda: (x, y), 2, ctx, grad_clip)
    return loss, norm, scaler


def test_scaled_backward_is_unscaled_before_clipping(model):
    m32, m16 = copy.deepcopy(model), copy.deepcopy(model)
    loss32, norm32, _ = one_step(m32, half=False, init_scale=1.0)
    loss16, norm16, scaler = one_step(m16, half=True, init_scale=2.0 ** 12)
    assert abs(loss16.item() - loss32.item()) < 1e-2, f"fp16 loss {loss16.item()} vs fp32 {loss32.item()}"
    # clipping must see the true gradient: scaled by 4096 its norm would be thousands of times larger
    assert abs(norm16.item() - norm32.item()) < 0.02 * norm32.item(), f"norm {norm16.item()} vs fp32 {norm32.item()}"
    assert scaler.get_scale() == 2.0 ** 12, "a step without overflow keeps the scale"
    moved = max((a - b).abs().max().item() for a, b in zip(m16.parameters(), model.parameters()))
    assert moved > 1e-5, "the float16 step should update the weights"


def test_overflowing_gradient_skips_the_step_and_halves_the_scale(model):
    before = copy.deepcopy(model)
    # 2**40 times the loss overflows float16 in backward: inf gradients, which must not reach the weights
    _, norm, scaler = one_step(model, half=True, init_scale=2.0 ** 40)
    assert not torch.isfinite(norm), f"the gradient should have overflowed, norm {norm}"
    for (name, a), b in zip(model.named_parameters(), before.parameters()):
        assert torch.equal(a, b), f"{name} changed although the step overflowed: it should be skipped"
    assert scaler.get_scale() == 2.0 ** 39, f"the scale should halve after an overflow, is {scaler.get_scale()}"


def train_half(data, out, *args):
    return run("train.py", f"--dataset={data}", f"--out_dir={out}", *TINY, "--dtype=float16",
               "--eval_interval=4", "--dropout=0.1", *args)


def test_train_py_runs_float16_on_cpu_and_resumes_exactly(tmp_path, tiny_data):
    straight = train_half(tiny_data, tmp_path / "a", "--max_iters=8")
    assert straight.returncode == 0, straight.stderr
    assert "in float16" in straight.stdout, f"the run should really use float16:\n{straight.stdout[:300]}"
    assert "note: float16 on cpu is slower" in straight.stderr, f"the slowness should be noted:\n{straight.stderr}"
    first = train_half(tiny_data, tmp_path / "b", "--max_iters=4")
    assert first.returncode == 0, first.stderr
    second = train_half(tiny_data, tmp_path / "b", "--max_iters=8", "--init_from=resume")
    assert second.returncode == 0, second.stderr
    lines = lambda out: [l for l in out.splitlines() if l.startswith("iter ")]
    strip_time = lambda ls: [l.split(", time")[0] for l in ls]
    assert strip_time(lines(straight.stdout)) == strip_time(lines(first.stdout) + lines(second.stdout)), \
        "a float16 run resumed halfway should log the same losses as one run straight through"
    a, b = ck.load_checkpoint(str(tmp_path / "a")), ck.load_checkpoint(str(tmp_path / "b"))
    assert a["scaler"]["scale"] == b["scaler"]["scale"], "the GradScaler state should be saved"
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), f"{name} differs between straight and resumed fp16 runs"


def test_resume_restores_the_grad_scaler(tmp_path, tiny_data):
    """Plant a huge loss scale in the checkpoint: a resume that restores it overflows and halves it;
    one that forgot it would start again from the default 65536."""
    out = tmp_path / "run"
    assert train_half(tiny_data, out, "--max_iters=4").returncode == 0
    ckpt = ck.load_checkpoint(str(out))
    ckpt["scaler"]["scale"] = 2.0 ** 40
    ck.save_checkpoint(str(out), ckpt)
    resumed = train_half(tiny_data, out, "--max_iters=8", "--init_from=resume")
    assert resumed.returncode == 0, resumed.stderr
    scale = ck.load_checkpoint(str(out))["scaler"]["scale"]
    assert 2.0 ** 30 < scale < 2.0 ** 40, f"the planted scale should be restored, then halved by overflows; got {scale}"
