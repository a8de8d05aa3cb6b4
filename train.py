"""
Train a GPT on a prepared dataset (data/<dataset>/train.bin, val.bin, meta.pkl).

    python train.py config/train_chinese.py                # the GPU run: 9 layers x 384 dims in float16
    python train.py config/train_chinese_cpu.py            # a few minutes on a laptop CPU
    python train.py config/train_chinese.py --batch_size=32 --init_from=resume
    python train.py --help                                 # every key, its default and meaning
    torchrun --standalone --nproc_per_node=4 train.py config/train_chinese.py   # 4 GPUs (DDP)

Settings are the globals below; a config file and then --key=value override them.
"""

import contextlib
import dataclasses
import gc
import math
import os
import signal
import statistics
import sys
import time

import numpy as np
import torch

from babygpt.checkpoint import (BEST_NAME, CKPT_NAME, META_NAME, MODEL_ARGS, copy_meta, dataset_dir, is_model_folder,
                        is_pretrained, load_checkpoint, load_meta, load_pretrained, model_from_checkpoint,
                        read_model_args, remove_partial_files, rng_states, save_checkpoint, saved_model_args,
                        set_rng_states, token_dtype)
from configurator import ConfigError, configure, settings
from model import GPT, GPTConfig
from babygpt.progress import log_eval, progress_bar, say, start_log
from babygpt.runtime import UserError, compile_or_eager, ddp_weight_spread, first_line, run_main, setup, setup_ddp
from babygpt.status import RunStatus

# -----------------------------------------------------------------------------
# I/O
out_dir = "out"                 # where ckpt.pt and a copy of the dataset's meta.pkl are written
eval_interval = 2000            # iterations between loss estimates (and checkpoints)
log_interval = 1                # iterations between log lines
eval_iters = 200                # batches of fixed windows per loss estimate (a smaller split: all of it)
eval_only = False               # estimate the losses once and exit
always_save_checkpoint = True   # save at every eval, not only when val loss improved
init_from = "scratch"           # 'scratch', 'resume' (out_dir/ckpt.pt), a model folder to fine-tune (ckpt.pt +
                                # meta.pkl: pretrained/hlm, a run's out_dir), 'gpt2'...'gpt2-xl' or a saved GPT-2
# logging
wandb_log = False               # log to Weights & Biases
wandb_project = "babygpt"       # wandb project name
wandb_run_name = "run"          # wandb run name
# data
dataset = "chinese"             # folder under data/ (or a path to one) with train.bin, val.bin, meta.pkl
gradient_accumulation_steps = 1 # micro-batches summed per optimizer step, over all DDP ranks together
batch_size = 12                 # sequences per micro-batch
block_size = 256                # context length in tokens (characters here)
# model
n_layer = 6                     # transformer blocks
n_head = 6                      # attention heads; must divide n_embd
n_embd = 384                    # embedding width
dropout = 0.0                   # dropout rate; 0.1-0.2 helps on small corpora
bias = False                    # biases in Linear and LayerNorm layers
adaptive_head = 0               # 0: GPT-2's full softmax; N: adaptive softmax, N most frequent tokens full width
# AdamW optimizer
learning_rate = 6e-4            # peak learning rate
max_iters = 5000                # total optimizer steps
passes = 0.0                    # > 0: max_iters and lr_decay_iters become this many passes over train.bin, so a
                                # fine-tune's length follows the size of your text (then leave both unset)
weight_decay = 1e-1             # AdamW weight decay, matrices only
decay_to_start = False          # a fine-tune's weight decay pulls each matrix toward its value at step 0 (the
                                # base's; grown rows toward the mean row) instead of toward zero
beta1 = 0.9                     # AdamW beta1
beta2 = 0.95                    # AdamW beta2; 0.99 for small batches
grad_clip = 1.0                 # clip gradient norm to this; 0 disables
# learning rate schedule
decay_lr = True                 # cosine decay after warmup; False keeps learning_rate
warmup_iters = 100              # linear warmup steps
lr_decay_iters = 5000           # step where the cosine reaches min_lr; ~max_iters
min_lr = 6e-5                   # floor of the schedule, ~learning_rate/10
# system
device = "auto"                 # auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps
dtype = "auto"                  # auto: float16 (GradScaler) on a CUDA GPU, float32 elsewhere; or name one
compile = True                  # torch.compile the model; falls back to eager if it fails
seed = 1337                     # seeds weights, dropout and the batch order
# -----------------------------------------------------------------------------
DEFAULTS = settings(globals())


def check_config(cfg, given):
    """Refuse settings that would fail later, or silently train nonsense. given: the keys the user set."""
    for key in ("batch_size", "block_size", "n_layer", "n_head", "n_embd", "gradient_accumulation_steps",
                "eval_interval", "eval_iters", "log_interval"):
        if cfg[key] < 1:
            raise UserError(f"{key} must be at least 1, got {cfg[key]}")
    if cfg["max_iters"] < 0:
        raise UserError(f"max_iters must be 0 or more, got {cfg['max_iters']}")
    if cfg["n_embd"] % cfg["n_head"]:
        raise UserError(f"n_embd ({cfg['n_embd']}) must be divisible by n_head ({cfg['n_head']})")
    if not 0.0 <= cfg["dropout"] < 1.0:
        raise UserError(f"dropout must be in [0, 1), got {cfg['dropout']}")
    if cfg["learning_rate"] <= 0 or cfg["min_lr"] < 0:
        raise UserError("learning_rate must be > 0 and min_lr >= 0")
    if cfg["passes"] < 0:
        raise UserError(f"passes must be 0 (off) or more, got {cfg['passes']}")
    if cfg["passes"] and {"max_iters", "lr_decay_iters"} & given:
        raise UserError(f"passes={cfg['passes']} sets max_iters and lr_decay_iters from the size of train.bin; "
                        "to give them yourself add --passes=0")
    if cfg["adaptive_head"] < 0:
        raise UserError(f"adaptive_head must be 0 (off) or a number of tokens, got {cfg['adaptive_head']}")
    if cfg["decay_to_start"] and cfg["init_from"] == "scratch":
        raise UserError("decay_to_start pulls a fine-tune toward the model it starts from; with init_from=scratch "
                        "there is none: leave it False, or start from a model folder (--init_from=pretrained/hlm)")
    if cfg["adaptive_head"] and is_pretrained(cfg["init_from"]):
        raise UserError("GPT-2's head is a full softmax: fine-tune it with --adaptive_head=0")
    init_from = cfg["init_from"]
    if init_from not in ("scratch", "resume") and not is_model_folder(init_from) and not is_pretrained(init_from):
        raise UserError(f"init_from must be 'scratch', 'resume', a model folder (ckpt.pt and meta.pkl, such as "
                        f"pretrained/hlm), gpt2, gpt2-medium, gpt2-large, gpt2-xl or a folder with a saved GPT-2, "
                        f"got '{init_from}'")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    if cfg["gradient_accumulation_steps"] % world_size:
        raise UserError(f"gradient_accumulation_steps ({cfg['gradient_accumulation_steps']}) must be divisible by "
                        f"the number of processes ({world_size}); set it to a multiple of {world_size}")


def load_dataset(data_dir, block_size):
    """Memory-map train.bin and val.bin with the dtype meta.pkl records (uint16 by default).
    A dataset without meta.pkl is GPT-2 BPE (data/openwebtext): meta and meta_path are then None."""
    meta_path = os.path.join(data_dir, "meta.pkl")
    if not all(os.path.isfile(os.path.join(data_dir, f)) for f in ("train.bin", "val.bin")):
        name = os.path.basename(os.path.normpath(data_dir))
        fix = (f"run python data/{name}/prepare.py first"  # a built-in corpus, with its own script
               if os.path.isfile(os.path.join(dataset_dir(name), "prepare.py")) else
               f"prepare your text into it: python data/chinese/prepare.py --input=your.txt --out_dir={data_dir}")
        raise UserError(f"dataset '{name}' is not prepared in {data_dir}; {fix}")
    meta, meta_path = (load_meta(meta_path), meta_path) if os.path.isfile(meta_path) else (None, None)
    bin_dtype = token_dtype(meta)
    splits = {}
    for split in ("train", "val"):
        path = os.path.join(data_dir, f"{split}.bin")
        if os.path.getsize(path) % bin_dtype.itemsize:
            raise UserError(f"{path} does not hold whole {bin_dtype} tokens; run the dataset's prepare.py again")
        splits[split] = np.memmap(path, dtype=bin_dtype, mode="r")
        if len(splits[split]) <= block_size:
            raise UserError(f"{split} split has {len(splits[split])} tokens, not more than block_size "
                            f"{block_size}; lower --block_size or prepare more text")
        # ids past the vocabulary mean meta.pkl is from another prepare run; the embedding would
        # fail mid-training with an index error. One pass over the memmap: ms per 100 MB once cached
        top = int(splits[split].max()) if meta else 0  # GPT-2 BPE data has no meta.pkl to check
        if meta and top >= meta["vocab_size"]:
            raise UserError(f"{path} holds token id {top} but {meta_path} has vocab_size {meta['vocab_size']}: "
                            "they come from different prepare runs; run the dataset's prepare.py again")
    return splits["train"], splits["val"], meta, meta_path


def get_batch(data, batch_size, block_size, generator, device):
    """batch_size random windows of data -> x, y (B, T) int64, y shifted one token right.
    The generator, not the global RNG, picks the windows, so the batch of an iteration
    depends only on the seed and the iteration number (a resumed run sees the same batches)."""
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator).tolist()
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])  # (B, T)
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])  # (B, T)
    if device.startswith("cuda"):
        # pinned memory lets the copy to the GPU overlap with compute
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def batch_generator(seed, iter_num, rank=0):
    """The RNG for one iteration's batches (see get_batch). Each DDP rank gets its own stream,
    so the ranks train on different windows; rank 0's batches are those of a one-process run."""
    return torch.Generator().manual_seed(seed * 1_000_003 + iter_num + rank * 1_000_000_007)


def get_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    """Linear warmup to learning_rate, then cosine decay to min_lr at lr_decay_iters, then flat.
    Warmup counts from it+1 so the very first step already learns (nanoGPT's is 0 at it=0)."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it >= lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return min_lr + coeff * (learning_rate - min_lr)


def eval_windows(n_tokens, block_size, count):
    """Start offsets of `count` non-overlapping windows spread evenly over a split, or of every
    window when the split holds fewer: a small val split (红楼梦's is 59k tokens) is then measured
    whole. Fixed offsets, so two evals differ only because the model changed; random windows
    overlap and repeat, and 20 random batches here scatter by about +-0.05."""
    total = (n_tokens - 1) // block_size  # a window needs block_size + 1 tokens: targets are shifted
    if count >= total:
        return np.arange(total) * block_size
    return np.arange(count) * total // count * block_size


@torch.no_grad()
def estimate_loss(model, splits, eval_iters, batch_size, block_size, device, ctx):
    """Mean loss of each split over up to eval_iters * batch_size fixed windows (see eval_windows),
    with dropout off. Every window has block_size targets, so the mean over windows is per token."""
    model.eval()
    out = {}
    for name, data in splits.items():
        starts = eval_windows(len(data), block_size, eval_iters * batch_size)
        total = 0.0
        for i in range(0, len(starts), batch_size):
            chunk = starts[i:i + batch_size]
            x = torch.from_numpy(np.stack([data[s:s + block_size] for s in chunk]).astype(np.int64))  # (B, T)
            y = torch.from_numpy(np.stack([data[s + 1:s + 1 + block_size] for s in chunk]).astype(np.int64))
            with ctx:
                _, loss = model(x.to(device), y.to(device))
            total += loss.item() * len(chunk)
        out[name] = total / len(starts)
    model.train()
    return out


def check_finite(losses, iter_num):
    """Stop before a NaN/inf model is trained further or saved over the last good checkpoint."""
    bad = [f"{name} loss {value}" for name, value in losses.items() if not math.isfinite(value)]
    if bad:
        raise UserError(f"{', '.join(bad)} at iteration {iter_num}: "
                        "training diverged; lower --learning_rate or use --dtype=float32 "
                        "(the last good checkpoint, if any, is kept)")


def make_out_dir(out_dir, init_from):
    """Fail at the start, not after an hour of training, when out_dir cannot be a folder; and say so when
    this run will replace one that is there (nanoGPT replaces it without a word)."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create out_dir '{out_dir}' ({e.strerror}); choose another --out_dir") from None
    if init_from != "resume" and os.path.isfile(os.path.join(out_dir, CKPT_NAME)):
        print(f"note: {out_dir} holds an earlier run: this one replaces its {CKPT_NAME}, {BEST_NAME} and log "
              "as it saves (--init_from=resume continues it; --out_dir=... keeps it)", file=sys.stderr)


def model_args_for(cfg, vocab_size):
    """GPTConfig's arguments for cfg on a dataset of vocab_size ids (None: GPT-2 BPE)."""
    model_args = {k: cfg[k] for k in MODEL_ARGS if k in cfg}
    # GPT-2 BPE has 50257 ids; nanoGPT pads to 50304, a multiple of 64, for faster matmuls
    model_args["vocab_size"] = vocab_size or 50304
    if model_args["adaptive_head"] >= model_args["vocab_size"]:
        # a config tuned for 红楼梦's 4.5k characters, run on a small alphabet: every token is a frequent one
        print(f"note: adaptive_head={model_args['adaptive_head']} is not below the vocabulary size "
              f"({model_args['vocab_size']}); using the full softmax", file=sys.stderr)
        model_args["adaptive_head"] = 0
    return model_args


SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "adaptive_head")  # what a checkpoint fixes


def base_shape(cfg, given):
    """cfg with the shape of the model it continues (resume) or fine-tunes (a model folder), so that a
    fine-tune's config need not repeat it. A shape key the user left alone (not in given) takes the base's
    value; one set to something else, even train.py's default, is refused, except a shorter block_size for a
    fine-tune (the context is cropped)."""
    base = cfg["out_dir"] if cfg["init_from"] == "resume" else cfg["init_from"]
    if cfg["init_from"] != "resume" and not is_model_folder(base):
        return cfg  # scratch, or GPT-2, whose shape finetune_model checks
    saved = read_model_args(load_checkpoint(base, mmap=True))  # mmap: the weights stay on disk
    cfg = dict(cfg)
    for key in SHAPE_KEYS:
        if key == "adaptive_head" and cfg[key] >= saved["vocab_size"]:
            cfg[key] = 0  # model_args_for turns it off on a vocabulary this small: the run it resumes did too
        if key not in given or cfg[key] == saved[key]:
            cfg[key] = saved[key]
        elif key == "block_size" and cfg["init_from"] != "resume" and cfg[key] < saved[key]:
            pass  # fine-tuning on shorter windows: finetune_base crops the positions
        else:
            keep = "resume" if cfg["init_from"] == "resume" else "fine-tune"
            raise UserError(f"{key} {cfg[key]} asked for, but {base}'s model has {saved[key]}; a {keep} keeps "
                            f"its model's shape: drop --{key}" + (" or lower it" if key == "block_size" else ""))
    return cfg


def build_model(cfg, vocab_size, device, meta=None):
    """A fresh GPT, the one in out_dir/ckpt.pt, a model folder's (its vocabulary grown to the dataset's), or
    GPT-2. Returns (model, checkpoint or None). meta: the dataset's vocabulary, which a pretrained character
    model must share or the dataset extend."""
    model_args = model_args_for(cfg, vocab_size)
    if is_model_folder(cfg["init_from"]):
        return finetune_base(cfg["init_from"], model_args, meta, cfg["dataset"]), None
    if is_pretrained(cfg["init_from"]):
        return finetune_model(cfg["init_from"], cfg["block_size"], cfg["dropout"], vocab_size, meta), None
    if cfg["init_from"] == "scratch":
        return GPT(GPTConfig(**model_args)), None
    checkpoint = load_checkpoint(cfg["out_dir"], device)
    saved = read_model_args(checkpoint)
    differ = [f"{k} {saved.get(k)} in the checkpoint vs {model_args[k]} asked for"
              for k in MODEL_ARGS if k != "dropout" and saved.get(k) != model_args[k]]
    if differ:
        raise UserError(f"cannot resume from {cfg['out_dir']}: " + "; ".join(differ))
    return model_from_checkpoint(checkpoint, dropout=cfg["dropout"]), checkpoint


def finetune_base(folder, model_args, meta, dataset):
    """The model in folder/ckpt.pt with its embedding (and the tied head) grown by the characters the
    dataset's vocabulary appends to folder/meta.pkl's (prepare.py --vocab_from). The base's rows are kept as
    they are, so every known character's logits start where the base's were; each new row starts as the mean
    row, an average character the model has no reason to favour or avoid until it has seen the new one."""
    base_meta = load_meta(os.path.join(folder, META_NAME))
    n_base = base_meta["vocab_size"]
    mismatch = next((i for i in range(n_base) if (meta or {}).get("itos", {}).get(i) != base_meta["itos"][i]), None)
    if meta is None or meta["vocab_size"] < n_base or mismatch is not None:
        raise UserError(f"dataset {dataset}'s vocabulary does not extend {folder}'s ({n_base:,} characters"
                        + (f"; id {mismatch} is {base_meta['itos'][mismatch]!r} there" if mismatch is not None else "")
                        + f"); prepare it with --vocab_from={folder}")
    base = model_from_checkpoint(load_checkpoint(folder), dropout=model_args["dropout"])
    n_new = meta["vocab_size"] - n_base
    if n_new and base.config.adaptive_head:
        raise UserError(f"{folder}'s model has an adaptive head, which cannot grow by the dataset's {n_new:,} new "
                        f"characters; fine-tune a model with adaptive_head=0, or prepare text it fully covers")
    if model_args["block_size"] < base.config.block_size:
        base.crop_block_size(model_args["block_size"])
    if not n_new:
        return base
    state = base.state_dict()
    wte = state["transformer.wte.weight"]  # (n_base, n_embd), the same tensor as lm_head.weight
    grown = torch.cat([wte, wte.mean(dim=0, keepdim=True).expand(n_new, -1)])  # (vocab_size, n_embd)
    state["transformer.wte.weight"] = state["lm_head.weight"] = grown
    model = GPT(GPTConfig(**model_args))
    model.load_state_dict(state)
    return model


def finetune_model(init_from, block_size, dropout, vocab_size, meta=None):
    """GPT-2 to fine-tune: its own shape and vocabulary; only dropout and a shorter context are ours."""
    model, model_meta = load_pretrained(init_from, dropout)
    if model_meta and model_meta["stoi"] != (meta or {}).get("stoi"):
        raise UserError(f"{init_from} has its own {model_meta['vocab_size']:,}-character vocabulary and the dataset's "
                        "meta.pkl gives other ids; fine-tune it on the dataset it was trained on (--dataset=...)")
    if block_size > model.config.block_size:
        raise UserError(f"block_size {block_size} is longer than {init_from}'s context "
                        f"{model.config.block_size}; use --block_size={model.config.block_size} or less")
    if block_size < model.config.block_size:
        model.crop_block_size(block_size)  # fewer positions: less memory and compute per step
    if vocab_size and vocab_size > model.config.vocab_size:
        raise UserError(f"the dataset has {vocab_size} token ids but {init_from} knows {model.config.vocab_size}; "
                        "fine-tune on a GPT-2 BPE dataset (python data/openwebtext/prepare.py)")
    return model


def start_wandb(cfg):
    """Open a Weights & Biases run with the whole config; WANDB_MODE=offline writes it to ./wandb
    (or WANDB_DIR) for a later `wandb sync`."""
    try:
        import wandb
        return wandb.init(project=cfg["wandb_project"], name=cfg["wandb_run_name"], config=cfg)
    except Exception as e:  # not logged in, no network, ...: wandb raises many kinds
        reason = first_line(e, 160)
        raise UserError(f"wandb could not start ({type(e).__name__}: {reason}); run `wandb login`, "
                        "or set WANDB_MODE=offline, or pass --wandb_log=False") from None


def ranks_in_sync(model, say):
    """After a DDP run, check that every rank ends with rank 0's weights: if gradients were not
    all-reduced, ranks that saw different batches would have drifted apart."""
    spread = ddp_weight_spread(model)
    say(f"ddp: largest weight difference between ranks {spread:.3e}"
        + ("" if spread == 0.0 else " (ranks drifted apart: gradients were not synchronized)"))


@dataclasses.dataclass
class Run:
    """What the training loop works on, built once by start_run()."""
    cfg: dict
    model: torch.nn.Module       # what trains: compiled and/or wrapped in DDP
    eval_model: torch.nn.Module  # the same weights without DDP: rank 0 evaluates alone
    raw_model: GPT               # the plain module whose state_dict is saved
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    splits: dict                 # {'train': memmap, 'val': memmap}
    dev: str
    ctx: object                  # autocast context (a no-op in float32)
    meta_path: str | None        # the dataset's meta.pkl, copied beside each checkpoint
    rank: int
    master: bool                 # rank 0: logs, evaluates, saves
    ddp: bool
    log: object                  # print on rank 0, nothing elsewhere
    wandb_run: object = None
    iter_num: int = 0
    best_val_loss: float = float("inf")
    running_mfu: float = -1.0
    clock: float = 0.0           # add time.time() to get seconds of training, continued across resumes
    bar: object = None
    status: RunStatus = None     # out_dir/status.json (rank 0 only)
    step_times: list = dataclasses.field(default_factory=list)  # recent steps' seconds, for speed and ETA
    start: dict = None           # decay_to_start: {name: the matrix at step 0}, saved in ckpt.pt for a resume


def start_run(cfg, status=None):
    """Dataset, device, model, optimizer and (on resume) their saved state: everything before step one."""
    train_data, val_data, meta, meta_path = load_dataset(dataset_dir(cfg["dataset"]), cfg["block_size"])
    # under torchrun each process is one rank; only rank 0 (master) logs, evaluates and saves
    rank, local_rank, world_size, run_device = setup_ddp(cfg["device"])
    ddp, master = torch.distributed.is_available() and torch.distributed.is_initialized(), rank == 0
    log = say if master else (lambda *a: None)
    dev, device_type, run_dtype, ctx = setup(run_device, cfg["dtype"], cfg["seed"])
    vocab_size = meta["vocab_size"] if meta else None  # None: GPT-2 BPE
    if cfg["passes"]:  # the same steps on a resume: train.bin is the same
        steps = steps_for_passes(cfg, len(train_data))
        cfg = dict(cfg, max_iters=steps, lr_decay_iters=steps)
        log(f"{cfg['passes']:g} passes over {len(train_data):,} train tokens: max_iters {steps:,}")
        if status is not None:
            status.update(max_iters=steps)
    log(f"dataset {cfg['dataset']}: vocab {vocab_size or 'GPT-2 BPE'}, {len(train_data):,} train tokens; "
        f"{tokens_per_iter(cfg):,} tokens per iteration on {world_size} x {dev} in {run_dtype}")

    model, checkpoint = build_model(cfg, vocab_size, dev, meta)  # a refused resume opens no wandb run
    if cfg["init_from"] == "scratch":  # an adaptive head's token order; resumed and fine-tuned ones keep theirs
        model.lm_head.order_by_frequency(train_data)
    wandb_run = start_wandb(cfg) if cfg["wandb_log"] and master else None  # before any file is written
    if status is not None:  # rank 0, not eval_only (which writes nothing)
        make_out_dir(cfg["out_dir"], cfg["init_from"])  # before compiling and training, which can take minutes
        status.start()  # the first write: every refusal came before, and left out_dir as it was
    model.to(dev)
    log(f"model: {model.get_num_params() / 1e6:.2f}M parameters")
    optimizer = model.configure_optimizers(cfg["weight_decay"], cfg["learning_rate"], (cfg["beta1"], cfg["beta2"]),
                                           device_type)
    # GradScaler keeps small float16 gradients from flushing to zero; a no-op in other dtypes
    scaler = torch.amp.GradScaler(device_type, enabled=(run_dtype == "float16"))
    r = Run(cfg, model, model, model, optimizer, scaler, {"train": train_data, "val": val_data}, dev, ctx,
            meta_path, rank, master, ddp, log, wandb_run, status=status)
    saved_rng = restore(r, checkpoint) if checkpoint is not None else None
    if cfg["decay_to_start"]:  # a resume keeps its fine-tune's step 0 (a run saved without one: from here)
        decayed = {id(p) for group in optimizer.param_groups if group["weight_decay"] for p in group["params"]}
        r.start = (checkpoint or {}).get("start") or {n: p.detach().clone() for n, p in model.named_parameters()
                                                     if id(p) in decayed}
    checkpoint = None  # free the memory

    if cfg["compile"]:
        def trial(m):
            x, y = get_batch(train_data, 1, cfg["block_size"], torch.Generator().manual_seed(0), dev)
            with ctx:
                m(x, y)[1].backward()
            model.zero_grad(set_to_none=True)
        r.model = r.eval_model = compile_or_eager(model, trial)
    if ddp:
        # DDP broadcasts rank 0's weights now and all-reduces (averages) gradients in backward()
        # an adaptive head's rare-token part gets no gradient from a batch without rare targets
        r.model = torch.nn.parallel.DistributedDataParallel(
            r.eval_model, device_ids=[local_rank] if device_type == "cuda" else None,
            find_unused_parameters=model.lm_head.skips_parameters)
    if master and not cfg["eval_only"]:
        r.clock = start_log(cfg["out_dir"], r.iter_num if cfg["init_from"] == "resume" else None) - time.time()
        r.bar = progress_bar(cfg["max_iters"], initial=r.iter_num, desc="train")
    if saved_rng is not None:
        # restored last: building the model and the compile trial above drew from the RNG too
        set_rng_states(saved_rng)
    return r


def tokens_per_iter(cfg):
    return cfg["gradient_accumulation_steps"] * cfg["batch_size"] * cfg["block_size"]


def steps_for_passes(cfg, n_train):
    """The optimizer steps that make cfg['passes'] passes over n_train training tokens (at least one)."""
    return max(1, round(cfg["passes"] * n_train / tokens_per_iter(cfg)))


def restore(r, checkpoint):
    """Optimizer, iteration, best loss and GradScaler from a checkpoint; returns its RNG states (or None)."""
    r.optimizer.load_state_dict(checkpoint["optimizer"])
    r.iter_num, r.best_val_loss = checkpoint["iter_num"], float(checkpoint["best_val_loss"])
    if checkpoint.get("scaler") and r.scaler.is_enabled():
        r.scaler.load_state_dict(checkpoint["scaler"])  # else a resumed fp16 run re-learns its loss scale
    r.log(f"resuming from {r.cfg['out_dir']} at iteration {r.iter_num}")
    return checkpoint.get("rng")  # nanoGPT's checkpoints have none


def weights(r):
    """What every saved file holds: the weights, their shape, and where the run was."""
    return {"model": r.raw_model.state_dict(), "model_args": saved_model_args(r.raw_model.config),
            "iter_num": r.iter_num, "best_val_loss": r.best_val_loss, "config": r.cfg}


def save(r):
    """ckpt.pt with everything an exact resume needs (nanoGPT's keys, plus RNG and GradScaler state),
    and the vocabulary beside it."""
    set_state(r, "saving")
    save_meta(r)
    save_checkpoint(r.cfg["out_dir"], {
        **weights(r),
        "optimizer": r.optimizer.state_dict(),
        "rng": rng_states(),  # exact resume: the next dropout masks
        "scaler": r.scaler.state_dict(),
        **({"start": r.start} if r.start else {}),
    })


def save_best(r):
    """best.pt: the weights with the lowest val loss so far, for sampling (no optimizer: a third of the size).
    ckpt.pt stays the latest model: on a small corpus the latest is often overfit and worse."""
    set_state(r, "saving")
    save_meta(r)
    save_checkpoint(r.cfg["out_dir"], weights(r), name=BEST_NAME)


def save_meta(r):
    """The vocabulary beside the checkpoints, first: a checkpoint is never on disk without it."""
    if r.meta_path:
        copy_meta(r.meta_path, r.cfg["out_dir"])


def evaluate_and_save(r, lr):
    """Estimate both losses, log them, and save: best.pt when val improved, ckpt.pt as configured."""
    cfg = r.cfg
    set_state(r, "evaluating")
    losses = estimate_loss(r.eval_model, r.splits, cfg["eval_iters"], cfg["batch_size"], cfg["block_size"],
                           r.dev, r.ctx)
    r.log(f"step {r.iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
    check_finite({f"{k} (eval)": v for k, v in losses.items()}, r.iter_num)
    set_state(r, "training", val_loss=losses["val"])
    if cfg["eval_only"]:
        return
    log_eval(cfg["out_dir"], r.iter_num, losses["train"], losses["val"], lr, r.clock + time.time(),
             final=r.iter_num >= cfg["max_iters"])
    if r.wandb_run is not None:
        mfu_pct = {"mfu": r.running_mfu * 100} if r.running_mfu >= 0 else {}  # none measured yet
        r.wandb_run.log({"iter": r.iter_num, "train/loss": losses["train"], "val/loss": losses["val"],
                         "lr": lr, **mfu_pct}, step=r.iter_num)
    improved = losses["val"] < r.best_val_loss
    r.best_val_loss = min(r.best_val_loss, losses["val"])
    if improved:  # from the first eval on: a run whose val loss never beats step 0 still has a best.pt
        save_best(r)
    if r.iter_num == 0 and cfg["init_from"] == "scratch":
        set_state(r, "training")
        return  # random weights: no ckpt.pt to resume from (a fine-tune's step 0 is its base)
    # nanoGPT saves only on improvement; a small corpus that overfits early would then never
    # be saved at all, so always_save_checkpoint keeps the latest weights at every eval
    if improved or cfg["always_save_checkpoint"]:
        save(r)
        r.log(f"saved checkpoint to {cfg['out_dir']}" + (" (and best.pt)" if improved else ""))
    set_state(r, "training")


def set_state(r, state, **fields):
    """What status.json says the run is doing (rank 0; eval_only writes no status)."""
    if r.status is not None:
        r.status.update(state, iter=r.iter_num, **fields)


def train_step(model, optimizer, scaler, next_batch, accum_steps, ctx, grad_clip, ddp=False):
    """One optimizer step over accum_steps micro-batches from next_batch() -> (x, y).
    Returns the loss (a detached tensor: reading it waits for the GPU) and the gradient norm
    before clipping (None without clipping). With float16 the loss is scaled up for backward so
    small gradients survive; a step whose gradients overflowed is skipped by scaler.step."""
    for micro_step in range(accum_steps):
        x, y = next_batch()
        # DDP would all-reduce at every backward(); the sum is only needed after the last micro-step
        last = micro_step == accum_steps - 1
        with model.no_sync() if ddp and not last else contextlib.nullcontext():
            with ctx:
                _, loss = model(x, y)
                loss = loss / accum_steps  # the sum over micro-steps is the mean (DDP averages ranks)
            scaler.scale(loss).backward()
    norm = None
    if grad_clip != 0.0:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach() * accum_steps, norm


def decay_to_start(model, start, lr, weight_decay):
    """After an AdamW step, which shrank each decayed matrix p by lr * weight_decay * p, give back
    lr * weight_decay * p0 (p0: start[name], its value at step 0): the decay pulls toward p0, not zero
    (L2-SP). A fine-tune on a small text then keeps what the base knew where the text does not disagree."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in start:
                p.add_(start[name], alpha=lr * weight_decay)


def log_step(r, loss, lr, dt):
    """Every log_interval iterations: the loss (checked for NaN), the step time and the running MFU."""
    if r.iter_num % r.cfg["log_interval"] or not r.master:
        return
    lossf = loss.item()  # waits for the GPU: only when logging
    check_finite({"training": lossf}, r.iter_num)
    if r.iter_num >= 5:  # the first iterations include compilation and warm-up
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        mfu = r.raw_model.estimate_mfu(tokens_per_iter(r.cfg) // world_size, dt)  # one GPU's share
        r.running_mfu = mfu if r.running_mfu < 0 else 0.9 * r.running_mfu + 0.1 * mfu
    mfu_note = f", mfu {r.running_mfu * 100:.2f}%" if r.running_mfu >= 0 else ""  # none measured before iteration 5
    r.log(f"iter {r.iter_num}: loss {lossf:.4f}, lr {lr:.2e}, time {dt * 1000:.1f}ms{mfu_note}")
    if r.status is not None:
        r.status.update(train_loss=lossf)


class StopRequest:
    """Ctrl-C (SIGINT, also what the web page's Stop sends) asks for a clean stop: the loop finishes
    its step, saves ckpt.pt and exits. A second Ctrl-C quits at once, whatever the process is doing:
    a save under way is abandoned (its temporary file deleted, the previous ckpt.pt kept) and nothing
    else runs. Raising KeyboardInterrupt instead would land at a random spot (inside torch.save, a
    tqdm write) and could be swallowed there or print a traceback.
    Not under DDP: the ranks would stop at different steps and wait for each other forever."""

    def __init__(self, install, status=None):
        self.requested, self.status = False, status
        if install:
            # Python runs the handler once for all the signals that came before it got to it, so two quick
            # Ctrl-Cs could count as one; its C handler also writes a byte per signal to the wakeup fd: count those
            self.signals, wakeup = os.pipe()
            os.set_blocking(self.signals, False)
            os.set_blocking(wakeup, False)
            signal.set_wakeup_fd(wakeup, warn_on_full_buffer=False)
            signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        try:
            count = os.read(self.signals, 1024).count(bytes([signal.SIGINT]))
        except BlockingIOError:
            count = 1
        if self.requested or count > 1:
            self._quit()
        self.requested = True
        # os.write, not print: the signal may arrive while the main thread is inside a print to stderr
        os.write(2, b"stopping after this step; Ctrl-C again to quit without saving\n")

    def _quit(self):
        remove_partial_files()
        if self.status is not None:
            self.status.end("stopped", error="interrupted before saving")
        os.write(2, b"interrupted\n")
        with contextlib.suppress(Exception):
            sys.stdout.flush()  # the log lines printed so far
        os._exit(130)


def finish(r):
    """Close the bar and wandb; under DDP check the ranks agree and tear the process group down."""
    if r.bar is not None:
        r.bar.close()
    if r.wandb_run is not None:
        r.wandb_run.finish()
    if r.ddp:
        ranks_in_sync(r.raw_model, r.log)
        # DDP's reducer holds on to the process group; left for interpreter shutdown, gloo's threads
        # can abort the process ("terminate called without an active exception"): free it first
        r.model = r.optimizer = None
        gc.collect()  # the reducer sits in reference cycles: collect it now, not at exit
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def start_status(cfg):
    """out_dir/status.json for this run (see status.py); None on DDP ranks other than 0 and for eval_only,
    which writes nothing. Nothing is written until the settings, the dataset and the model have passed
    their checks (start_run): a refused run leaves out_dir exactly as it was, a finished run's record too."""
    if cfg["eval_only"] or int(os.environ.get("RANK", "0")) != 0:
        return None
    return RunStatus(cfg["out_dir"], cfg["max_iters"])


def run_training(cfg, given, status):
    """Evaluate, save and step until max_iters (or a Ctrl-C). Returns True when stopped early by Ctrl-C.
    given: the keys a config file or --key=value set."""
    check_config(cfg, given)
    cfg = base_shape(cfg, given)
    r = start_run(cfg, status)
    cfg = r.cfg  # with max_iters from passes
    stop = StopRequest(install=r.master and not r.ddp and not cfg["eval_only"], status=status)
    accum_steps = cfg["gradient_accumulation_steps"] // int(os.environ.get("WORLD_SIZE", "1"))  # per rank
    max_iters, t0, stopped = cfg["max_iters"], time.time(), False
    while True:
        lr = lr_at(cfg, r.iter_num)
        for group in r.optimizer.param_groups:
            group["lr"] = lr
        if r.master and (r.iter_num % cfg["eval_interval"] == 0 or r.iter_num == max_iters or cfg["eval_only"]):
            evaluate_and_save(r, lr)
        if cfg["eval_only"] or r.iter_num >= max_iters:
            break
        generator = batch_generator(cfg["seed"], r.iter_num, r.rank)
        scale = r.scaler.get_scale() if r.start else None  # read only when needed: it waits for the GPU
        loss, _ = train_step(r.model, r.optimizer, r.scaler,
                             lambda: get_batch(r.splits["train"], cfg["batch_size"], cfg["block_size"], generator,
                                               r.dev),
                             accum_steps, r.ctx, cfg["grad_clip"], r.ddp)
        if r.start and r.scaler.get_scale() >= scale:  # a lower scale: float16 overflowed, the step was skipped
            decay_to_start(r.raw_model, r.start, lr, cfg["weight_decay"])
        t1 = time.time()
        dt, t0 = t1 - t0, t1
        r.step_times = (r.step_times + [dt])[-11:]  # recent steps only: the ETA follows speed changes
        log_step(r, loss, lr, dt)
        if r.bar is not None:
            r.bar.update(1)
        r.iter_num += 1
        if status is not None:  # the median step: an eval or a save inside one step does not skew the ETA
            status.progress(r.iter_num, statistics.median(r.step_times), tokens_per_iter(cfg))
        stopped = stop.requested and r.iter_num < max_iters  # at max_iters the final eval saves anyway
        if stopped:
            save(r)
            r.log(f"stopped at iteration {r.iter_num}: saved {os.path.join(cfg['out_dir'], CKPT_NAME)}; "
                  "continue with --init_from=resume")
            break
    finish(r)
    return stopped


def lr_at(cfg, iter_num):
    """The learning rate of iteration iter_num under cfg's schedule."""
    if not cfg["decay_lr"]:
        return cfg["learning_rate"]
    return get_lr(iter_num, cfg["learning_rate"], cfg["warmup_iters"], cfg["lr_decay_iters"], cfg["min_lr"])


def main(argv=None):
    given = set()
    cfg = configure(DEFAULTS, sys.argv[1:] if argv is None else argv, __file__, given)
    if cfg is None:
        return  # --help was printed
    status = start_status(cfg)
    try:
        stopped = run_training(cfg, given, status)
    except (UserError, ConfigError) as e:
        if status:
            status.end("failed", error=f"error: {first_line(e)}")  # the line run_main prints
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: out at once, nothing saved
        if status:
            status.end("stopped", error="interrupted before saving")
        raise
    except BaseException as e:  # a bug or an unexpected failure: the watcher still learns the run ended
        if status:
            status.end("failed", error=f"{type(e).__name__}: {first_line(e)}")
        raise
    if status:
        status.end("stopped" if stopped else "finished")
    if stopped:
        sys.exit(130)  # the shell's convention for Ctrl-C, so `train.py && sample.py` stops here


if __name__ == "__main__":
    run_main(main)
