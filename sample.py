"""
Write continuations of a prompt with a trained model.

    python sample.py --out_dir=out-chinese                       # 10 samples x 500 characters
    python sample.py --out_dir=out-chinese --start=宝玉 --num_samples=3
    python sample.py --out_dir=out-chinese --start=FILE:prompt.txt
    python sample.py --help
"""

import os
import sys

import torch

from checkpoint import codec, find_meta, load_checkpoint, load_meta, model_from_checkpoint
from configurator import configure
from progress import progress_bar, say
from runtime import UserError, run_main, setup

# -----------------------------------------------------------------------------
init_from = "resume"    # 'resume': the checkpoint in out_dir
out_dir = "out"         # folder holding ckpt.pt (and the run's meta.pkl)
start = "\n"            # prompt text, or FILE:path to read the prompt from a UTF-8 file
num_samples = 10        # number of samples to write
max_new_tokens = 500    # characters generated per sample
temperature = 0.8       # <1 sharper, >1 more random, 0 greedy
top_k = 200             # sample only among the top_k most likely characters
seed = 1337             # same seed, same samples
device = "auto"         # auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps
dtype = "float16"       # float16, bfloat16 or float32; CPU and MPS use float32
compile = False         # torch.compile the model (pays off only for long generations on a GPU)
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))}


def read_prompt(start):
    """--start text, or the contents of the file after FILE:."""
    if not start.startswith("FILE:"):
        return start
    path = start[len("FILE:"):]
    if not os.path.isfile(path):
        raise UserError(f"prompt file '{path}' not found (given as --start=FILE:{path})")
    with open(path, encoding="utf-8") as f:
        return f.read()


def main():
    cfg = configure(DEFAULTS, sys.argv[1:], __file__)
    if cfg is None:
        return
    globals().update(cfg)
    if init_from != "resume":
        raise UserError(f"init_from must be 'resume', got '{init_from}'")
    if max_new_tokens < 1 or num_samples < 1:
        raise UserError("max_new_tokens and num_samples must be at least 1")
    if temperature < 0:
        raise UserError(f"temperature must be >= 0 (0 is greedy), got {temperature}")

    dev, _, _, ctx = setup(device, dtype, seed)
    checkpoint = load_checkpoint(out_dir, dev)
    meta_path = find_meta(out_dir, checkpoint)
    if meta_path is None:
        raise UserError(f"no meta.pkl beside {out_dir}/ckpt.pt or in its dataset folder; "
                        "run the dataset's prepare.py, or copy its meta.pkl into out_dir")
    meta = load_meta(meta_path)
    encode, decode = codec(meta)
    model = model_from_checkpoint(checkpoint, dropout=0.0)
    model.eval().to(dev)
    if compile:
        model = torch.compile(model)

    prompt = read_prompt(start)
    unknown = sorted(set(c for c in prompt if c not in meta["stoi"]))
    if unknown:
        raise UserError(f"the prompt has characters the model never saw: {''.join(unknown)!r}; remove them")
    if not prompt:
        raise UserError("the prompt is empty; give at least one character with --start=...")
    x = torch.tensor(encode(prompt), dtype=torch.long, device=dev)[None, ...]  # (1, T)
    with torch.no_grad(), ctx:
        for _ in progress_bar(num_samples, desc="samples"):  # a bar only when stderr is a terminal
            y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k)  # (1, T + new)
            say(decode(y[0].tolist()))
            say("---------------")
            say(y.shape)


if __name__ == "__main__":
    run_main(main)
