"""
The CUDA paths on a real GPU: train.py in float16 with its GradScaler and torch.compile (dtype and compile
left at their defaults, as config/train_chinese.py runs), an exact-enough resume, bfloat16 where the GPU
has it, sample.py on the GPU, and a GPU-trained checkpoint sampled on a CPU (the KV cache on the GPU:
tests/test_engine.py, whose cached-against-uncached test also runs there).
Skipped where torch sees no CUDA GPU (CI has none; tests/test_fp16.py runs the float16 path on a CPU).
Run on a GPU machine: python -m pytest tests/test_cuda.py
"""

import pytest
import torch
from conftest import TEXT, TINY, run, write_dataset

from babygpt import checkpoint as ck

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# TINY without its CPU settings: device, dtype and compile as a user on a GPU gets them
GPU = [a for a in TINY if not a.startswith(("--device", "--dtype", "--compile"))] + ["--device=cuda",
                                                                                     "--learning_rate=3e-3"]


def gpu(script, *args):
    """A script in a new python, as a user starts it: CUDA and compile's worker processes start as they do for a
    user, not inside a fork of the tests' torch server."""
    return run(script, *args, fresh=True)


def losses(stdout):
    """[(iter, loss)] from train.py's 'iter N: loss X, ...' lines."""
    return [(int(l.split()[1].rstrip(":")), float(l.split("loss ")[1].split(",")[0]))
            for l in stdout.splitlines() if l.startswith("iter ")]


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    """40 float16 steps on the GPU, compiled, with dropout (so the CUDA RNG matters on resume)."""
    base = tmp_path_factory.mktemp("cuda")
    data, out = str(base / "ds"), str(base / "a")
    write_dataset(data)
    proc = gpu("train.py", f"--dataset={data}", f"--out_dir={out}", *GPU, "--max_iters=40", "--eval_interval=20",
               "--dropout=0.1")
    assert proc.returncode == 0, proc.stderr
    return {"data": data, "out": out, "base": base, "proc": proc}


def test_float16_compiled_training_learns(gpu_run):
    proc = gpu_run["proc"]
    assert "x cuda in float16" in proc.stdout, f"dtype auto should train in float16 on a GPU:\n{proc.stdout[:400]}"
    assert "torch.compile failed" not in proc.stderr, f"compile should work on a GPU:\n{proc.stderr}"
    curve = losses(proc.stdout)
    assert len(curve) == 40 and all(loss == loss for _, loss in curve), f"40 finite losses expected: {curve}"
    assert curve[-1][1] < curve[0][1] - 0.3, f"the loss should fall on the GPU: {curve[0]} -> {curve[-1]}"
    ckpt = ck.load_checkpoint(gpu_run["out"])
    assert not any(k.startswith("_orig_mod.") for k in ckpt["model"]), "compiled keys should be saved plain"
    assert ckpt["scaler"]["scale"] > 0, "the GradScaler's state should be in ckpt.pt"
    assert "cuda" in ckpt["rng"], "the CUDA RNG (dropout masks) should be saved for resume"


def test_float16_resume_on_the_gpu_logs_the_same_losses(gpu_run):
    data, out = gpu_run["data"], str(gpu_run["base"] / "b")
    first = gpu("train.py", f"--dataset={data}", f"--out_dir={out}", *GPU, "--max_iters=20", "--eval_interval=20",
                "--dropout=0.1")
    assert first.returncode == 0, first.stderr
    second = gpu("train.py", f"--dataset={data}", f"--out_dir={out}", *GPU, "--max_iters=40", "--eval_interval=20",
                 "--dropout=0.1", "--init_from=resume")
    assert second.returncode == 0, second.stderr
    straight, resumed = losses(gpu_run["proc"].stdout), losses(first.stdout) + losses(second.stdout)
    assert [i for i, _ in straight] == [i for i, _ in resumed], "the resumed run should log the same iterations"
    # the same batches, dropout masks and loss scale; only the GPU's summation order may differ (atomics)
    worst = max(abs(a - b) for (_, a), (_, b) in zip(straight, resumed))
    assert worst < 2e-3, f"a resumed float16 run should log the losses of the straight run (worst gap {worst:.4f})"


def test_a_fine_tune_of_the_shipped_model_resumes_on_the_gpu(tmp_path):
    """config/finetune_chinese.py on the GPU: the grown embedding, the decay toward the base's weights (kept in
    ckpt.pt on the GPU) and the RNG states all come back on resume."""
    src = tmp_path / "mine.txt"
    src.write_text((TEXT + "咖啡馆里，她打开电脑写日记。\n") * 30, encoding="utf-8")
    prepared = run("data/chinese/prepare.py", f"--input={src}", f"--out_dir={tmp_path / 'mine'}",
                   "--vocab_from=pretrained/hlm", "--block_size=16")
    assert prepared.returncode == 0, prepared.stderr
    tune = lambda out, *args: gpu("train.py", "config/finetune_chinese.py", f"--dataset={tmp_path / 'mine'}",
                                  f"--out_dir={tmp_path / out}", "--device=cuda", "--dtype=auto", "--passes=0",
                                  "--lr_decay_iters=20", "--eval_interval=10", "--eval_iters=2", "--batch_size=4",
                                  "--block_size=16", "--log_interval=1", *args)
    straight, first = tune("a", "--max_iters=20"), tune("b", "--max_iters=10")
    assert straight.returncode == 0 and first.returncode == 0, straight.stderr + first.stderr
    second = tune("b", "--max_iters=20", "--init_from=resume")
    assert second.returncode == 0, second.stderr
    assert "in float16" in straight.stdout, straight.stdout[:400]
    a, b = losses(straight.stdout), losses(first.stdout) + losses(second.stdout)
    assert [i for i, _ in a] == [i for i, _ in b] and max(abs(x - y) for (_, x), (_, y) in zip(a, b)) < 2e-3, \
        f"a resumed fine-tune on the GPU should log the straight run's losses:\n{a}\n{b}"
    assert "start" in ck.load_checkpoint(str(tmp_path / "b")), "the base's weights should be kept for the decay"


def test_gpu_checkpoint_samples_on_a_cpu(gpu_run):
    proc = gpu("sample.py", f"--out_dir={gpu_run['out']}", "--device=cpu", "--num_samples=2", "--max_new_tokens=30")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("---------------") == 2, f"two samples expected:\n{proc.stdout}"


def test_bfloat16_trains_without_a_grad_scaler(tmp_path, tiny_data):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    proc = gpu("train.py", f"--dataset={tiny_data}", f"--out_dir={tmp_path / 'bf16'}", *GPU, "--max_iters=40",
               "--eval_interval=20", "--dtype=bfloat16", "--compile=False")
    assert proc.returncode == 0, proc.stderr
    assert "in bfloat16" in proc.stdout, proc.stdout[:400]
    curve = losses(proc.stdout)
    assert curve[-1][1] < curve[0][1] - 0.3, f"the loss should fall in bfloat16: {curve[0]} -> {curve[-1]}"
    assert not ck.load_checkpoint(str(tmp_path / "bf16"))["scaler"], "bfloat16 needs no loss scale"


def test_sample_py_on_the_gpu_is_repeatable_compiles_and_reports_copies():
    args = ["--out_dir=pretrained/hlm", "--device=cuda", "--num_samples=3", "--max_new_tokens=60"]
    first, again, compiled = gpu("sample.py", *args), gpu("sample.py", *args), gpu("sample.py", *args, "--compile=True")
    for proc in (first, again, compiled):
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("---------------") == 3, f"three samples expected:\n{proc.stdout}"
        assert "warning" not in proc.stderr, proc.stderr
    assert first.stdout == again.stdout, "the same seed on the GPU should give the same samples"
    assert first.stderr.count("copy report, sample") == 3, f"a copy report per sample expected:\n{first.stderr}"


def test_the_gpu_poetry_recipe_trains_as_written(tmp_path, tiny_data):
    """config/train_poetry_gpu.py (`make poetry` on a GPU), its own settings but the length, on a tiny dataset:
    compiled float16 steps whose loss falls, and a best.pt that pretrained/export.py takes."""
    out = tmp_path / "poetry"
    proc = gpu("train.py", "config/train_poetry_gpu.py", f"--dataset={tiny_data}", f"--out_dir={out}", "--max_iters=60",
               "--lr_decay_iters=60", "--warmup_iters=10", "--eval_interval=30", "--eval_iters=2", "--log_interval=10")
    assert proc.returncode == 0, proc.stderr
    steps = losses(proc.stdout)
    assert steps[-1][1] < steps[0][1] - 0.5, f"the loss should fall: {steps}"
    proc = gpu("pretrained/export.py", f"--out_dir={out}", f"--to={tmp_path / 'shipped'}", "--samples=1",
               "--sample_length=20")
    assert proc.returncode == 0, proc.stderr
