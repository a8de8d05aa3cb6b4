"""
Fine-tuning a model of ours on your own text: prepare.py --vocab_from keeps the base's ids and appends new
characters; train.py --init_from=<model folder> grows the embedding, trains, resumes, and refuses what cannot work.
Run: python -m pytest tests/test_finetune.py
"""

import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from conftest import TEXT, TINY, assert_user_error, run, write_dataset

from babygpt import checkpoint as ck
import train
from babygpt.finetune import pull_toward_start

NEW_TEXT = "咖啡馆里，她打开电脑写日记：今天下雨了。\n"  # 咖啡馆电脑日记雨 are not in TEXT


def prepare_mine(tmp_path, base, text=(TEXT + NEW_TEXT) * 30, name="mine"):
    src = tmp_path / f"{name}.txt"
    src.write_text(text, encoding="utf-8")
    out = tmp_path / name
    proc = run("data/chinese/prepare.py", f"--input={src}", f"--out_dir={out}", f"--vocab_from={base}",
               "--block_size=16")
    return proc, str(out)


def read_meta(folder):
    with open(os.path.join(folder, "meta.pkl"), "rb") as f:
        return pickle.load(f)


def test_prepare_keeps_the_base_ids_and_appends_new_characters(trained_run, tmp_path):
    base = read_meta(trained_run["out"])
    proc, mine = prepare_mine(tmp_path, trained_run["out"])
    assert proc.returncode == 0, proc.stderr
    meta = read_meta(mine)
    n = base["vocab_size"]
    assert [meta["itos"][i] for i in range(n)] == [base["itos"][i] for i in range(n)], "base ids must not move"
    new = [meta["itos"][i] for i in range(n, meta["vocab_size"])]
    assert new == sorted(set(NEW_TEXT) - set(TEXT)), f"new characters appended in code point order, got {new}"
    ids = np.concatenate([np.fromfile(os.path.join(mine, f"{s}.bin"), dtype=np.uint16) for s in ("train", "val")])
    assert "".join(meta["itos"][i] for i in ids.tolist()) == (TEXT + NEW_TEXT) * 30, "the ids should decode to the text"
    share = sum(c in new for c in NEW_TEXT) / len(TEXT + NEW_TEXT)
    assert f"{len(new)} new ones appended ({share:.1%} of the text)" in proc.stdout, proc.stdout


def test_prepare_refuses_a_missing_or_foreign_vocabulary(tmp_path):
    proc, mine = prepare_mine(tmp_path, tmp_path / "nowhere")
    assert_user_error(proc, "--vocab_from", "no meta.pkl")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"vocab_size": 1, "itos": {0: "ab"}, "stoi": {"ab": 0}}))
    proc, _ = prepare_mine(tmp_path, tmp_path / "evil.pkl")
    assert_user_error(proc, "not a character vocabulary")
    assert not os.path.exists(mine), "a refused prepare should leave nothing behind"


def grown(base_dir, data_dir, **settings):
    """train.build_model as a fine-tune from base_dir on data_dir, for the tests that look inside."""
    cfg = {**train.DEFAULTS, "init_from": base_dir, "dataset": data_dir, "dropout": 0.0, **settings}
    cfg = train.base_shape(cfg, given=set(settings))
    meta = ck.load_meta(os.path.join(data_dir, "meta.pkl"))
    return train.build_model(cfg, meta["vocab_size"], "cpu", meta)[0].eval(), meta


def test_grown_model_keeps_the_base_rows_and_logits(trained_run, tmp_path):
    _, mine = prepare_mine(tmp_path, trained_run["out"])
    model, meta = grown(trained_run["out"], mine)
    base = ck.model_from_checkpoint(ck.load_checkpoint(trained_run["out"]), dropout=0.0).eval()
    n = base.config.vocab_size
    assert model.config.vocab_size == meta["vocab_size"] > n
    wte = model.transformer.wte.weight
    assert torch.equal(wte[:n], base.transformer.wte.weight), "the base's rows should be unchanged"
    assert torch.allclose(wte[n:], base.transformer.wte.weight.mean(0).expand(meta["vocab_size"] - n, -1))
    assert model.lm_head.weight is wte, "the head should stay tied to the embedding"
    x = torch.randint(0, n, (2, 16), generator=torch.Generator().manual_seed(0))  # known characters only
    with torch.no_grad():
        want, got = base(x, x)[0], model(x, x)[0]
    assert torch.allclose(got[..., :n], want, atol=1e-6), "known characters' logits should be the base's at step 0"


def finetune(data, out, base, *args):
    return run("train.py", f"--dataset={data}", f"--out_dir={out}", f"--init_from={base}", *TINY,
               "--eval_interval=4", "--dropout=0.1", *args)


def test_finetune_learns_the_new_characters_and_resumes_exactly(trained_run, tmp_path):
    _, mine = prepare_mine(tmp_path, trained_run["out"])
    straight = finetune(mine, tmp_path / "a", trained_run["out"], "--max_iters=8")
    assert straight.returncode == 0, straight.stderr
    first = finetune(mine, tmp_path / "b", trained_run["out"], "--max_iters=4")
    assert first.returncode == 0, first.stderr
    second = finetune(mine, tmp_path / "b", "resume", "--max_iters=8")
    assert second.returncode == 0, second.stderr
    a, b = ck.load_checkpoint(str(tmp_path / "a")), ck.load_checkpoint(str(tmp_path / "b"))
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), f"{name} differs between a straight and a resumed fine-tune"
    meta, n = read_meta(mine), read_meta(trained_run["out"])["vocab_size"]
    assert a["model_args"]["vocab_size"] == meta["vocab_size"], "the checkpoint should carry the grown vocabulary"
    new_rows = a["model"]["transformer.wte.weight"][n:]
    assert not torch.allclose(new_rows, new_rows.mean(0).expand_as(new_rows)), "new characters' rows should train"
    assert read_meta(str(tmp_path / "a")) == meta, "the run should keep the grown vocabulary beside its checkpoint"
    sample = run("sample.py", f"--out_dir={tmp_path / 'a'}", "--start=咖", "--num_samples=1", "--max_new_tokens=5",
                 "--device=cpu")
    assert sample.returncode == 0 and sample.stdout.startswith("咖"), sample.stderr


def test_best_pt_of_a_fine_tune_that_only_got_worse_is_its_base(trained_run, tmp_path):
    """Step 0 of a fine-tune is the base model: best.pt keeps it when no later eval beats it."""
    _, mine = prepare_mine(tmp_path, trained_run["out"], text=TEXT * 30)  # nothing new to learn
    proc = finetune(mine, tmp_path / "a", trained_run["out"], "--max_iters=4", "--learning_rate=0.5",
                    "--decay_lr=False", "--grad_clip=0")
    assert proc.returncode == 0, proc.stderr
    rows = [l.split(",") for l in open(tmp_path / "a" / "log.csv") if l[0].isdigit()]
    assert float(rows[-1][2]) > float(rows[0][2]), f"a learning rate of 0.5 should make val worse: {rows}"
    best = ck.load_checkpoint(str(tmp_path / "a"), name="best.pt")
    assert best["iter_num"] == 0 and abs(best["best_val_loss"] - float(rows[0][2])) < 1e-5, "best.pt should be the base"


def test_decay_to_start_pulls_toward_the_start_not_zero():
    """An AdamW step with no gradient only decays: toward zero by default, back to step 0's value with it."""
    start = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    for pull, want in [(False, start * (1 - 0.1 * 2.0)), (True, start)]:
        model = torch.nn.Linear(3, 4, bias=False)
        with torch.no_grad():
            model.weight.copy_(start)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=2.0)
        model.weight.grad = torch.zeros_like(start)
        optimizer.step()
        if pull:
            pull_toward_start(model, {"weight": start}, lr=0.1, weight_decay=2.0)
        assert torch.allclose(model.weight, want, atol=1e-6), f"decay_to_start={pull}: {model.weight}"


def test_decay_to_start_keeps_a_fine_tune_near_its_base_and_resumes_exactly(trained_run, tmp_path):
    _, mine = prepare_mine(tmp_path, trained_run["out"])
    strong = ["--weight_decay=100", "--learning_rate=0.005", "--decay_lr=False"]  # each step decays by half
    for out, args in [("zero", []), ("start", ["--decay_to_start=True"])]:
        proc = finetune(mine, tmp_path / out, trained_run["out"], "--max_iters=8", *strong, *args)
        assert proc.returncode == 0, proc.stderr
    first = finetune(mine, tmp_path / "resumed", trained_run["out"], "--max_iters=4", *strong, "--decay_to_start=True")
    assert first.returncode == 0, first.stderr
    second = finetune(mine, tmp_path / "resumed", "resume", "--max_iters=8", *strong, "--decay_to_start=True")
    assert second.returncode == 0, second.stderr
    base = ck.load_checkpoint(trained_run["out"])["model"]
    runs = {out: ck.load_checkpoint(str(tmp_path / out)) for out in ("zero", "start", "resumed")}
    for name, tensor in runs["start"]["model"].items():
        assert torch.equal(tensor, runs["resumed"]["model"][name]), f"{name}: the resume lost its step-0 weights"
    block = "transformer.h.0.mlp.c_fc.weight"  # a matrix the base already had
    far = {out: (runs[out]["model"][block] - base[block]).norm().item() for out in ("zero", "start")}
    assert far["start"] < far["zero"] / 2, f"distance from the base's {block}: {far}"
    assert "start" in runs["start"] and "start" not in runs["zero"], "only a decay_to_start run keeps step 0"


def test_decay_to_start_needs_a_model_to_start_from(tmp_path):
    write_dataset(str(tmp_path / "ds"))
    proc = run("train.py", f"--dataset={tmp_path / 'ds'}", f"--out_dir={tmp_path / 'out'}", *TINY, "--max_iters=2",
               "--decay_to_start=True")
    assert_user_error(proc, "decay_to_start", "init_from=scratch")
    assert not os.path.exists(tmp_path / "out")



def test_passes_set_the_length_from_the_text(trained_run, tmp_path):
    """--passes makes max_iters (and the cosine's end) that many passes over train.bin, whatever its size."""
    from babygpt import status
    steps = {}
    for name, copies in [("short", 10), ("long", 30)]:
        _, mine = prepare_mine(tmp_path, trained_run["out"], text=(TEXT + NEW_TEXT) * copies, name=name)
        n_train = len(np.fromfile(os.path.join(mine, "train.bin"), dtype=np.uint16))
        proc = finetune(mine, tmp_path / f"out-{name}", trained_run["out"], "--passes=1.5", "--eval_interval=1000")
        assert proc.returncode == 0, proc.stderr
        steps[name] = round(1.5 * n_train / (4 * 16))  # TINY: batch 4 x 16 characters
        st = status.read_status(str(tmp_path / f"out-{name}"))
        assert (st["state"], st["iter"], st["max_iters"]) == ("finished", steps[name], steps[name]), st
        cfg = ck.load_checkpoint(str(tmp_path / f"out-{name}"))["config"]
        assert cfg["max_iters"] == cfg["lr_decay_iters"] == steps[name], "the cosine should end with the run"
    assert steps["long"] > 2 * steps["short"], f"three times the text should take about three times the steps: {steps}"


@pytest.mark.parametrize("max_iters", [8, 5000])  # 5000: train.py's default, asked for all the same
def test_passes_and_max_iters_together_are_refused(trained_run, tmp_path, max_iters):
    _, mine = prepare_mine(tmp_path, trained_run["out"])
    proc = finetune(mine, tmp_path / "out", trained_run["out"], "--passes=2", f"--max_iters={max_iters}")
    assert_user_error(proc, "passes=2", "--passes=0")
    assert not os.path.exists(tmp_path / "out"), "a refused run should leave no out_dir"


@pytest.fixture(scope="module")
def adaptive_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("adaptive")
    write_dataset(str(base / "ds"))
    proc = run("train.py", f"--dataset={base / 'ds'}", f"--out_dir={base / 'out'}", *TINY, "--adaptive_head=8",
               "--max_iters=2", "--eval_interval=2")
    assert proc.returncode == 0, proc.stderr
    return str(base / "out")


@pytest.mark.parametrize("case, words", [
    ("foreign", ["does not extend", "--vocab_from="]),
    ("longer", ["block_size 32 asked for", "has 16"]),
    ("longer, train.py's default", ["block_size 256 asked for", "has 16"]),  # asked for is asked for
    ("shape", ["n_layer 3 asked for", "has 2", "drop --n_layer"]),
    ("shape, train.py's default", ["n_layer 6 asked for", "has 2"]),
    ("adaptive", ["adaptive head", "cannot grow"]),
])
def test_finetune_refusals_change_nothing(trained_run, adaptive_base, tmp_path, case, words):
    base = adaptive_base if case == "adaptive" else trained_run["out"]
    if case == "foreign":
        mine = str(tmp_path / "foreign")
        write_dataset(mine, text=NEW_TEXT * 50)  # its own ids, not the base's
    else:
        _, mine = prepare_mine(tmp_path, base)
    extra = {"longer": ["--block_size=32"], "longer, train.py's default": ["--block_size=256"], "shape": ["--n_layer=3"],
             "shape, train.py's default": ["--n_layer=6"]}.get(case, [])
    before = {f: os.path.getmtime(os.path.join(base, f)) for f in os.listdir(base)}
    proc = finetune(mine, tmp_path / "out", base, "--max_iters=2", *extra)
    assert_user_error(proc, *words)
    assert not os.path.exists(tmp_path / "out"), "a refused fine-tune should leave no out_dir"
    assert before == {f: os.path.getmtime(os.path.join(base, f)) for f in os.listdir(base)}, "the base was touched"


def test_a_shorter_context_is_cropped(trained_run, tmp_path):
    _, mine = prepare_mine(tmp_path, trained_run["out"])
    model, _ = grown(trained_run["out"], mine, block_size=8)
    assert model.config.block_size == 8 and model.transformer.wpe.weight.shape[0] == 8


def test_sample_points_a_model_folder_to_out_dir(trained_run):
    proc = run("sample.py", f"--init_from={trained_run['out']}", "--device=cpu")
    assert_user_error(proc, f"--out_dir={trained_run['out']}")


def test_eval_only_gives_a_base_its_loss_on_your_text_and_writes_nothing(trained_run, tmp_path):
    """The README's way to pick a base: --eval_only=True prints the base's val loss on your text before any
    step (not a fresh model's) and stops without a checkpoint."""
    _, mine = prepare_mine(tmp_path, trained_run["out"])
    losses = {}
    for init_from in (trained_run["out"], "scratch"):
        out = tmp_path / f"out-{os.path.basename(init_from)}"
        proc = run("train.py", f"--init_from={init_from}", f"--dataset={mine}", f"--out_dir={out}", "--eval_only=True",
                   *TINY)
        assert proc.returncode == 0, proc.stderr
        line = next(l for l in proc.stdout.splitlines() if l.startswith("step 0:"))
        losses[init_from] = float(line.rsplit("val loss", 1)[1])
        assert not os.path.exists(out / "ckpt.pt") and not os.path.exists(out / "best.pt"), "eval_only saves nothing"
    assert losses[trained_run["out"]] < losses["scratch"], f"the base (20 steps on TEXT) should know it a little: {losses}"
