"""
Train a GPT on a prepared dataset (data/<dataset>/train.bin, val.bin, meta.pkl).

    python train.py config/train_chinese.py                # the seed's GPU run
    python train.py config/train_chinese_cpu.py            # a few minutes on a laptop CPU
    python train.py config/train_chinese.py --batch_size=32 --init_from=resume
    python train.py --help                                 # every key, its default and meaning
    torchrun --standalone --nproc_per_node=4 train.py config/train_chinese.py   # 4 GPUs (DDP)

Settings are the globals below; a config file and then --key=value override them.
"""

import contextlib
import gc
import math
import os
import sys
import time

import numpy as np
import torch

from checkpoint import (MODEL_ARGS, copy_meta, dataset_dir, is_pretrained, load_checkpoint, load_meta,
                        load_pretrained, model_from_checkpoint, rng_states, save_checkpoint, set_rng_states,
                        token_dtype)
from configurator import configure
from model import GPT, GPTConfig
from progress import log_eval, progress_bar, say, start_log
from runtime import UserError, compile_or_eager, ddp_weight_spread, first_line, run_main, setup, setup_ddp

# -----------------------------------------------------------------------------
# I/O
out_dir = "out"                 # where ckpt.pt and a copy of the dataset's meta.pkl are written
eval_interval = 2000            # iterations between loss estimates (and checkpoints)
log_interval = 1                # iterations between log lines
eval_iters = 200                # batches averaged per loss estimate
eval_only = False               # estimate the losses once and exit
always_save_checkpoint = True   # save at every eval, not only when val loss improved
init_from = "scratch"           # 'scratch', 'resume' (out_dir/ckpt.pt), 'gpt2'...'gpt2-xl' or a saved GPT-2 folder
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
# AdamW optimizer
learning_rate = 6e-4            # peak learning rate
max_iters = 5000                # total optimizer steps
weight_decay = 1e-1             # AdamW weight decay, matrices only
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
dtype = "float16"               # float16 (GradScaler), bfloat16 or float32; CPU and MPS use float32
compile = True                  # torch.compile the model; falls back to eager if it fails
seed = 1337                     # seeds weights, dropout and the batch order
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))}


def check_config(cfg):
    """Refuse settings that would fail later, or silently train nonsense."""
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
    if cfg["init_from"] not in ("scratch", "resume") and not is_pretrained(cfg["init_from"]):
        raise UserError(f"init_from must be 'scratch', 'resume', gpt2, gpt2-medium, gpt2-large, gpt2-xl "
                        f"or a folder with a saved GPT-2, got '{cfg['init_from']}'")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    if cfg["gradient_accumulation_steps"] % world_size:
        raise UserError(f"gradient_accumulation_steps ({cfg['gradient_accumulation_steps']}) must be divisible by "
                        f"the number of processes ({world_size}); set it to a multiple of {world_size}")


def load_dataset(data_dir, block_size):
    """Memory-map train.bin and val.bin with the dtype meta.pkl records (uint16 by default).
    A dataset without meta.pkl is GPT-2 BPE (data/openwebtext): meta and meta_path are then None."""
    meta_path = os.path.join(data_dir, "meta.pkl")
    if not all(os.path.isfile(os.path.join(data_dir, f)) for f in ("train.bin", "val.bin")):
        name = os.path.basename(data_dir)
        raise UserError(f"dataset '{name}' is not prepared in {data_dir}; run python data/{name}/prepare.py first")
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


@torch.no_grad()
def estimate_loss(model, splits, eval_iters, batch_size, block_size, device, ctx, seed):
    """Mean loss over eval_iters batches of each split, with dropout off. The same batches every
    time (a fixed generator), so two evals differ only because the model changed."""
    model.eval()
    out = {}
    for name, data in splits.items():
        generator = torch.Generator().manual_seed(seed + 7)
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            x, y = get_batch(data, batch_size, block_size, generator, device)
            with ctx:
                _, loss = model(x, y)
            losses[k] = loss.item()
        out[name] = losses.mean().item()
    model.train()
    return out


def check_finite(losses, iter_num):
    """Stop before a NaN/inf model is trained further or saved over the last good checkpoint."""
    bad = [f"{name} loss {value}" for name, value in losses.items() if not math.isfinite(value)]
    if bad:
        raise UserError(f"{', '.join(bad)} at iteration {iter_num}: "
                        "training diverged; lower --learning_rate or use --dtype=float32 "
                        "(the last good checkpoint, if any, is kept)")


def make_out_dir(out_dir):
    """Fail at the start, not after an hour of training, when out_dir cannot be a folder."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create out_dir '{out_dir}' ({e.strerror}); choose another --out_dir") from None


def build_model(cfg, vocab_size, device):
    """A fresh GPT, the one in out_dir/ckpt.pt, or GPT-2. Returns (model, checkpoint or None)."""
    model_args = {k: cfg[k] for k in MODEL_ARGS if k in cfg}
    # GPT-2 BPE has 50257 ids; nanoGPT pads to 50304, a multiple of 64, for faster matmuls
    model_args["vocab_size"] = vocab_size or 50304
    if is_pretrained(cfg["init_from"]):
        return finetune_model(cfg["init_from"], cfg["block_size"], cfg["dropout"], vocab_size), None
    if cfg["init_from"] == "scratch":
        return GPT(GPTConfig(**model_args)), None
    checkpoint = load_checkpoint(cfg["out_dir"], device)
    saved = checkpoint["model_args"]
    differ = [f"{k} {saved.get(k)} in the checkpoint vs {model_args[k]} asked for"
              for k in MODEL_ARGS if k != "dropout" and saved.get(k) != model_args[k]]
    if differ:
        raise UserError(f"cannot resume from {cfg['out_dir']}: " + "; ".join(differ))
    return model_from_checkpoint(checkpoint, dropout=cfg["dropout"]), checkpoint


def finetune_model(init_from, block_size, dropout, vocab_size):
    """GPT-2 to fine-tune: its own shape and vocabulary; only dropout and a shorter context are ours."""
    model = load_pretrained(init_from, dropout)
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


def main():
    cfg = configure(DEFAULTS, sys.argv[1:], __file__)
    if cfg is None:
        return  # --help was printed
    check_config(cfg)
    globals().update(cfg)

    train_data, val_data, meta, meta_path = load_dataset(dataset_dir(dataset), block_size)
    # under torchrun each process is one rank; only rank 0 (master) logs, evaluates and saves
    rank, local_rank, world_size, run_device = setup_ddp(device)
    ddp, master = torch.distributed.is_available() and torch.distributed.is_initialized(), rank == 0
    log = say if master else (lambda *a: None)
    accum_steps = gradient_accumulation_steps // world_size  # micro-steps per rank (check_config: divisible)
    dev, device_type, run_dtype, ctx = setup(run_device, dtype, seed)
    vocab_size = meta["vocab_size"] if meta else None  # None: GPT-2 BPE
    tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
    log(f"dataset {dataset}: vocab {vocab_size or 'GPT-2 BPE'}, {len(train_data):,} train tokens; "
        f"{tokens_per_iter:,} tokens per iteration on {world_size} x {dev} in {run_dtype}")

    model, checkpoint = build_model(cfg, vocab_size, dev)  # a refused resume opens no wandb run
    run = start_wandb(cfg) if wandb_log and master else None  # before any file is written: it may refuse
    make_out_dir(out_dir)  # before compiling and training, which can take minutes
    model.to(dev)
    log(f"model: {model.get_num_params() / 1e6:.2f}M parameters")
    optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
    iter_num, best_val_loss, saved_rng = 0, float("inf"), None
    # GradScaler keeps small float16 gradients from flushing to zero; a no-op in other dtypes
    scaler = torch.amp.GradScaler(device_type, enabled=(run_dtype == "float16"))
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        iter_num, best_val_loss = checkpoint["iter_num"], float(checkpoint["best_val_loss"])
        if checkpoint.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(checkpoint["scaler"])  # else a resumed fp16 run re-learns its loss scale
        saved_rng = checkpoint.get("rng")  # nanoGPT's checkpoints have none
        log(f"resuming from {out_dir} at iteration {iter_num}")
        checkpoint = None  # free the memory

    splits = {"train": train_data, "val": val_data}
    if compile:
        def trial(m):
            x, y = get_batch(train_data, 1, block_size, torch.Generator().manual_seed(0), dev)
            with ctx:
                m(x, y)[1].backward()
            model.zero_grad(set_to_none=True)
        model = compile_or_eager(model, trial)
    eval_model = model  # rank 0 evaluates alone, so not through DDP
    if ddp:
        # DDP broadcasts rank 0's weights now and all-reduces (averages) gradients in backward()
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device_type == "cuda" else None)
    raw_model = getattr(eval_model, "_orig_mod", eval_model)

    if master and not eval_only:
        clock = start_log(out_dir, iter_num if init_from == "resume" else None) - time.time()
    bar = progress_bar(max_iters, initial=iter_num, desc="train") if master and not eval_only else None
    if saved_rng is not None:
        # restored last: building the model and the compile trial above drew from the RNG too
        set_rng_states(saved_rng)
    t0 = time.time()
    running_mfu = -1.0
    while True:
        lr = get_lr(iter_num, learning_rate, warmup_iters, lr_decay_iters, min_lr) if decay_lr else learning_rate
        for group in optimizer.param_groups:
            group["lr"] = lr

        if master and (iter_num % eval_interval == 0 or iter_num == max_iters or eval_only):
            losses = estimate_loss(eval_model, splits, eval_iters, batch_size, block_size, dev, ctx, seed)
            log(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            check_finite({f"{k} (eval)": v for k, v in losses.items()}, iter_num)
            if not eval_only:
                log_eval(out_dir, iter_num, losses["train"], losses["val"], lr, clock + time.time(),
                         final=iter_num >= max_iters)
            if run is not None:
                mfu_pct = {"mfu": running_mfu * 100} if running_mfu >= 0 else {}  # none measured yet
                run.log({"iter": iter_num, "train/loss": losses["train"], "val/loss": losses["val"],
                         "lr": lr, **mfu_pct}, step=iter_num)
            improved = losses["val"] < best_val_loss
            best_val_loss = min(best_val_loss, losses["val"])
            # nanoGPT saves only on improvement; a small corpus that overfits early would then never
            # be saved at all, so always_save_checkpoint keeps the latest weights at every eval
            if (improved or always_save_checkpoint) and iter_num > 0 and not eval_only:
                save_checkpoint(out_dir, {
                    "model": raw_model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "model_args": dict(raw_model.config.__dict__),
                    "iter_num": iter_num,
                    "best_val_loss": best_val_loss,
                    "config": cfg,
                    "rng": rng_states(),  # exact resume: the next dropout masks
                    "scaler": scaler.state_dict(),
                })
                if meta_path:
                    copy_meta(meta_path, out_dir)
                log(f"saved checkpoint to {out_dir}")
        if eval_only or iter_num >= max_iters:
            break

        generator = batch_generator(seed, iter_num, rank)
        for micro_step in range(accum_steps):
            x, y = get_batch(train_data, batch_size, block_size, generator, dev)
            # DDP would all-reduce at every backward(); the sum is only needed after the last micro-step
            last = micro_step == accum_steps - 1
            with model.no_sync() if ddp and not last else contextlib.nullcontext():
                with ctx:
                    _, loss = model(x, y)
                    loss = loss / accum_steps  # the sum over micro-steps is the mean (DDP averages ranks)
                scaler.scale(loss).backward()
        if grad_clip != 0.0:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

        t1 = time.time()
        dt, t0 = t1 - t0, t1
        if iter_num % log_interval == 0 and master:
            lossf = loss.item() * accum_steps  # .item() waits for the GPU: only when logging
            check_finite({"training": lossf}, iter_num)
            if iter_num >= 5:  # the first iterations include compilation and warm-up
                mfu = raw_model.estimate_mfu(tokens_per_iter // world_size, dt)  # one GPU's share
                running_mfu = mfu if running_mfu < 0 else 0.9 * running_mfu + 0.1 * mfu
            log(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.2e}, time {dt * 1000:.1f}ms, mfu {running_mfu * 100:.2f}%")
        if bar is not None:
            bar.update(1)
        iter_num += 1

    if bar is not None:
        bar.close()
    if run is not None:
        run.finish()
    if ddp:
        ranks_in_sync(raw_model, log)
        # DDP's reducer holds on to the process group; left for interpreter shutdown, gloo's threads
        # can abort the process ("terminate called without an active exception"): free it first
        model = optimizer = loss = None  # (loss: its graph references the DDP hooks)
        gc.collect()  # the reducer sits in reference cycles: collect it now, not at exit
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run_main(main)
