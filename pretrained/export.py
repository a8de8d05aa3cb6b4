"""
Turn a finished run into a shipped pretrained model: pretrained/<name>/{ckpt.pt, meta.pkl, README.md}.

    python train.py config/train_chinese_pretrained.py && python pretrained/export.py   # pretrained/hlm
    python train.py config/train_poetry.py && python pretrained/export.py --out_dir=out-poetry --to=pretrained/poetry \
        --poems=200                                                                        # pretrained/poetry

It takes the run's best.pt (lowest val loss), keeps the weights only, in float16 (half the bytes; a
char-level model samples the same text from them), measures val loss over every window of the val split
(train loss over up to TRAIN_WINDOWS windows; the poetry model's also over data/poetry's val split) before
it writes anything, and writes the model card with unedited samples from sample.py and their copy report (for
the poetry model: poems in form, and experiments/poems.py's figures). Run it again only when the model
changes: the folder is committed to git.
"""

import contextlib
import io
import os
import platform
import subprocess
import sys

import numpy as np
import torch

from babygpt.atomic import atomic_write
from babygpt.checkpoint import (BEST_NAME, META_NAME, checkpoint_dict, codec, dataset_dir, load_checkpoint, load_meta,
                                model_from_checkpoint, save_checkpoint, token_dtype)
from configurator import configure, settings
from babygpt.progress import read_log
from babygpt.errors import UserError, run_main
from train import estimate_loss, load_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# -----------------------------------------------------------------------------
out_dir = "out-chinese-pretrained"  # the finished run (its best.pt, log.csv, meta.pkl)
to = "pretrained/hlm"               # the folder to write: ckpt.pt, meta.pkl, README.md
samples = 3                         # unedited samples on the model card
sample_length = 300                 # characters per sample on the card
note = ""                           # a line for the card: how the run differed from its config, if it did
poems = 0                           # poems experiments/poems.py writes for the card (poetry: 200; half as many
                                    #   couplets); 0: none
# -----------------------------------------------------------------------------
DEFAULTS = settings(globals())
SIZE_LIMIT_MB = 15  # a shipped model's float16 folder, unless its recipe says otherwise
# per dataset: what the card calls the text, how it is prepared and trained, and the sample.py options of the
# card's samples beyond --num_samples/--max_new_tokens (poems: one per sample, in the forms a user asks for)
POEM_SAMPLES = [["--acrostic=春夏秋冬", "--rhyme=True"], ["--form=七律", "--start=秋夜"], ["--form=如梦令"], []]
RECIPES = {
    "chinese": {"text": "红楼梦", "prepare": "python data/chinese/prepare.py",
                "config": "config/train_chinese_pretrained.py", "samples": [[]]},
    "poetry": {"text": "唐诗 and 宋词", "prepare": "python data/poetry/prepare.py --include=tang,ci",
               "config": "config/train_poetry.py", "samples": POEM_SAMPLES},
    # the shipped poetry model since it learned all the verse: its val loss on data/poetry's 唐诗 + 宋词 val split
    # too, where the model before it was measured (those poems are val in both splits: the split hashes each poem)
    "poetry-all": {"text": "classical verse (唐诗, 宋诗, 宋词, 元曲 and more, 苏轼 held out)",
                   "prepare": "python data/poetry/prepare.py --include=tang,ci,song,yuanqu,shijing,chuci,wudai,"
                              "caocao,nalan --hold_out=苏轼 --out_dir=data/poetry-all",
                   "config": "config/train_poetry.py", "gpu_config": "config/train_poetry_gpu.py",
                   "samples": POEM_SAMPLES, "also_val": "poetry",
                   "size_limit_mb": 25},  # room for the GPU recipe's wider model (config/train_poetry_gpu.py)
}
TRAIN_WINDOWS = 8192  # train loss over at most this many windows, spread evenly: a 24M-character split whole
                      # would take half an hour on a CPU, and 1M characters measure it to the second decimal


def half_weights(best):
    """best.pt -> the shipped checkpoint: float16 weights and what sample.py (ours or nanoGPT's) reads."""
    halves = {}  # by storage: wte and the tied lm_head stay one tensor, saved once
    state = {k: halves.setdefault(v.data_ptr(), v.half()) if v.is_floating_point() else v
             for k, v in best["model"].items()}
    return checkpoint_dict(state, best["model_args"], best["iter_num"], best["best_val_loss"], best["config"])


def shipped_mb(ckpt):
    """The size of ckpt.pt as export writes it, in MB."""
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return buffer.tell() / 1e6


def split_losses(checkpoint, also_val=None):
    """Loss of the float16 weights (computed in float32) over every non-overlapping window of the val split,
    and of the train split up to TRAIN_WINDOWS windows: {'val', 'train', 'train_windows'}, and 'also_val' over
    the val split of the dataset also_val, read as text and encoded with this model's vocabulary."""
    other_dir = also_val and dataset_dir(also_val)
    if other_dir and not os.path.isfile(os.path.join(other_dir, "val.bin")):  # before minutes of measuring
        raise UserError(f"the card compares with {other_dir}'s val split, which is not prepared: run make setup")
    model = model_from_checkpoint({**checkpoint, "model": {k: v.float() for k, v in checkpoint["model"].items()}})
    block, folder = checkpoint["config"]["block_size"], dataset_dir(checkpoint["config"]["dataset"])
    train_data, val_data, _, _ = load_dataset(folder, block)
    batch = 32  # windows per forward pass: the same windows and mean as one at a time, several times faster
    loss = lambda data, windows: estimate_loss(model, {"x": data}, -(-windows // batch), batch, block, "cpu",
                                               contextlib.nullcontext())["x"]  # eval_windows caps at the split's
    losses = {"val": loss(val_data, len(val_data) // block),
              "train_windows": min((len(train_data) - 1) // block, TRAIN_WINDOWS)}
    losses["train"] = loss(train_data, losses["train_windows"])
    if other_dir:
        encode = codec(load_meta(os.path.join(folder, META_NAME)))[0]
        other = load_meta(os.path.join(other_dir, META_NAME))
        ids = np.fromfile(os.path.join(other_dir, "val.bin"), dtype=token_dtype(other))
        text = codec(other)[1](ids.tolist())
        losses["also_val"] = loss(np.array(encode(text), dtype=np.int64), len(text) // block)
    return losses


def run_script(script, *args):
    """One of the repository's scripts, as a user runs it: (stdout, stderr)."""
    done = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          encoding="utf-8", cwd=ROOT)
    if done.returncode != 0:
        raise UserError(f"{script} {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout, done.stderr


def card_samples(export, options):
    """The card's samples: one sample.py run per option list, each as the command and its output."""
    parts = []
    for extra in options:
        args = [f"--out_dir={export['to']}", f"--num_samples={export['samples']}",
                f"--max_new_tokens={export['sample_length']}", *extra]
        stdout, stderr = run_script("sample.py", *args, "--device=cpu", "--dtype=float32")
        parts += [f"`python sample.py {' '.join(args)}`", "", "```", stdout.rstrip(), "```", "",
                  "Its copy report (sample.py's stderr):", "", "```", stderr.rstrip(), "```", ""]
    return parts


def poem_figures(export):
    """experiments/poems.py on the exported model: its tables (poems, 对联), as the card's section (poetry only)."""
    args = [f"--run={export['to']}", f"--num_samples={export['poems']}", "--per_title=8",
            f"--couplets={export['poems'] // 2}"]
    stdout, _ = run_script("experiments/poems.py", *args)
    return [f"## Poems, measured (`python experiments/poems.py {' '.join(args)}`)", "", "```", stdout.rstrip(),
            "```", ""]


def git_commit():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        return head.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def model_card(ckpt, losses, log, size_mb, export):
    """The README.md of the exported folder; every number in it measured here or read from the run.
    export: this script's settings (where it wrote, how many samples of what length, the note)."""
    cfg, args = ckpt["config"], ckpt["model_args"]
    name = os.path.basename(os.path.normpath(str(cfg["dataset"])))
    recipe = RECIPES.get(name, {"text": name, "prepare": f"python data/{name}/prepare.py", "samples": [[]],
                                "config": "the run's config"})  # a model of your own text
    n_params = sum(v.numel() for k, v in ckpt["model"].items()
                   if k not in ("transformer.wpe.weight", "lm_head.weight"))  # lm_head is tied to wte
    row = next((r for r in log if r["iter"] == ckpt["iter_num"]), None)
    wall = f"{row['time_s'] / 60:.1f} min of training to this iteration" if row else "not logged"
    keys = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "weight_decay", "batch_size", "learning_rate",
            "max_iters", "lr_decay_iters", "min_lr", "beta2", "warmup_iters")
    return "\n".join([
        f"# {recipe['text']} pretrained model",
        "",
        f"A character-level GPT trained by babygpt on the built-in {recipe['text']}. Sample it with no training:",
        "",
        f"    python sample.py --out_dir={export['to']}",
        "",
        "| | |", "|---|---|",
        f"| config | `{recipe['config']}`: {', '.join(f'{k}={cfg[k]}' for k in keys)} |",
        f"| parameters | {n_params / 1e6:.2f}M (without position embeddings), float16: {size_mb:.1f} MB |",
        f"| iterations | best val loss at iteration {ckpt['iter_num']} of {cfg['max_iters']} |",
        f"| wall time, device | {wall}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, float32 training |",
        f"| val loss | **{losses['val']:.4f}** (every non-overlapping {args['block_size']}-character window of the "
        "val split) |",
        f"| train loss | {losses['train']:.4f} ({losses['train_windows']:,} windows of the train split, spread evenly) |",
        *([f"| val loss on data/{recipe['also_val']} | {losses['also_val']:.4f} (its val split, the same way: "
           "where the model before this one was measured) |"] if "also_val" in losses else []),
        f"| commit | {git_commit()} (at export) |",
        "",
        f"Reproduce: `{recipe['prepare']} && python train.py {recipe['config']} && python pretrained/export.py "
        f"--out_dir={cfg['out_dir']} --to={export['to']}`",
        *(["", f"On a GPU, the same with `python train.py {recipe['gpu_config']}` (`make poetry` picks it where torch "
               "sees a GPU)."] if "gpu_config" in recipe else []),
        *(["", f"Note: {export['note']}"] if export["note"] else []),
        "",
        *(poem_figures(export) if export["poems"] else []),
        "## Samples (unedited)", "",
        *card_samples(export, recipe["samples"])])


def main():
    cfg = configure(DEFAULTS, sys.argv[1:], __file__)
    if cfg is None:
        return
    best = load_checkpoint(cfg["out_dir"], name=BEST_NAME)
    if best["model_args"].get("adaptive_head"):  # nanoGPT's GPTConfig has no such key
        raise UserError(f"{cfg['out_dir']} was trained with adaptive_head={best['model_args']['adaptive_head']}; "
                        "the shipped model must stay readable by nanoGPT's sample.py: train it with adaptive_head=0")
    ckpt = half_weights(best)
    recipe = RECIPES.get(os.path.basename(os.path.normpath(str(best["config"]["dataset"]))), {})
    size_mb, limit = shipped_mb(ckpt), recipe.get("size_limit_mb", SIZE_LIMIT_MB)
    if size_mb > limit:  # measured before writing, so an oversized model leaves the shipped one as it was
        raise UserError(f"the exported model would be {size_mb:.1f} MB, over the {limit} MB limit; "
                        "train a smaller model")
    losses = split_losses(ckpt, recipe.get("also_val"))  # before writing: a missing dataset refuses, nothing changed
    os.makedirs(cfg["to"], exist_ok=True)
    save_checkpoint(cfg["to"], ckpt)
    with open(os.path.join(cfg["out_dir"], META_NAME), "rb") as f:
        meta = f.read()
    atomic_write(os.path.join(cfg["to"], META_NAME), lambda f: f.write(meta))
    card = model_card(ckpt, losses, read_log(cfg["out_dir"]), size_mb, cfg)
    atomic_write(os.path.join(cfg["to"], "README.md"), lambda f: f.write(card.encode("utf-8")))
    print(f"wrote {cfg['to']}: val loss {losses['val']:.4f}, train {losses['train']:.4f}, {size_mb:.1f} MB")


if __name__ == "__main__":
    run_main(main)
