"""
Train a GPT on a prepared dataset (data/<dataset>/train.bin, val.bin, meta.pkl).

    python train.py config/train_chinese.py                # the GPU run: 9 layers x 384 dims in float16
    python train.py config/train_chinese_cpu.py            # 1-2 minutes on a 2-core CPU
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
import sys
import time

import torch

from babygpt.batches import batch_generator, estimate_loss, get_batch, load_dataset
from babygpt.checkpoint import (BEST_NAME, CKPT_NAME, checkpoint_dict, copy_meta, dataset_dir, is_model_folder,
                                is_pretrained, rng_states, save_checkpoint, saved_model_args, set_rng_states)
from babygpt.errors import UserError, first_line, run_main
from babygpt.finetune import base_shape, build_model, pull_toward_start
from babygpt.progress import RunReport
from babygpt.runtime import compile_or_eager, ddp_weight_spread, setup, setup_ddp
from babygpt.schedule import lr_at, steps_for_passes, tokens_per_iter
from babygpt.status import RunStatus
from babygpt.stop import StopRequest
from configurator import configure, settings
from model import GPT

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
class Trainee:
    """The model being trained and what steps it."""
    raw: GPT                     # the plain module whose state_dict is saved
    model: torch.nn.Module       # what trains: compiled and/or wrapped in DDP
    eval_model: torch.nn.Module  # the same weights without DDP: rank 0 evaluates alone
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    start: dict = None           # decay_to_start: {name: the matrix at step 0}, saved in ckpt.pt for a resume

    @property
    def ddp(self):
        return self.model is not self.eval_model  # DDP wraps the model that trains, not the one that evaluates


def build_trainee(cfg, meta, train_data, dev, device_type, run_dtype, report):
    """The model (fresh, resumed, fine-tuned), its optimizer and GradScaler, restored on a resume; out_dir is
    made and status.json first written here, once every refusal has passed. Returns (trainee, iter_num,
    best_val_loss, the saved RNG states or None)."""
    model, checkpoint = build_model(cfg, meta["vocab_size"] if meta else None, dev, meta)
    if cfg["init_from"] == "scratch":  # an adaptive head's token order; resumed and fine-tuned ones keep theirs
        model.lm_head.order_by_frequency(train_data)
    report.wandb_run = start_wandb(cfg) if cfg["wandb_log"] and report.master else None  # before any file
    if report.status is not None:  # rank 0, not eval_only (which writes nothing)
        make_out_dir(cfg["out_dir"], cfg["init_from"])  # before compiling and training, which can take minutes
        report.status.start()  # the first write: every refusal came before, and left out_dir as it was
    model.to(dev)
    report.log(f"model: {model.get_num_params() / 1e6:.2f}M parameters")
    optimizer = model.configure_optimizers(cfg["weight_decay"], cfg["learning_rate"], (cfg["beta1"], cfg["beta2"]),
                                           device_type)
    # GradScaler keeps small float16 gradients from flushing to zero; a no-op in other dtypes
    scaler = torch.amp.GradScaler(device_type, enabled=(run_dtype == "float16"))
    trainee = Trainee(model, model, model, optimizer, scaler)
    iter_num, best_val_loss, rng = 0, float("inf"), None
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        iter_num, best_val_loss = checkpoint["iter_num"], float(checkpoint["best_val_loss"])
        if checkpoint.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(checkpoint["scaler"])  # else a resumed fp16 run re-learns its loss scale
        rng = checkpoint.get("rng")  # nanoGPT's checkpoints have none
        report.log(f"resuming from {cfg['out_dir']} at iteration {iter_num}")
    if cfg["decay_to_start"]:  # a resume keeps its fine-tune's step 0 (a run saved without one: from here)
        decayed = {id(p) for group in optimizer.param_groups if group["weight_decay"] for p in group["params"]}
        trainee.start = (checkpoint or {}).get("start") or {n: p.detach().clone() for n, p in model.named_parameters()
                                                           if id(p) in decayed}
    return trainee, iter_num, best_val_loss, rng


def wrap_for_training(trainee, cfg, train_data, dev, ctx, local_rank, device_type):
    """torch.compile (tried on one real step, else eager) and, under torchrun, DDP around the model."""
    model = trainee.raw
    if cfg["compile"]:
        def trial(m):
            x, y = get_batch(train_data, 1, cfg["block_size"], torch.Generator().manual_seed(0), dev)
            with ctx:
                m(x, y)[1].backward()
            model.zero_grad(set_to_none=True)
        trainee.model = trainee.eval_model = compile_or_eager(model, trial)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # DDP broadcasts rank 0's weights now and all-reduces (averages) gradients in backward()
        # an adaptive head's rare-token part gets no gradient from a batch without rare targets
        trainee.model = torch.nn.parallel.DistributedDataParallel(
            trainee.eval_model, device_ids=[local_rank] if device_type == "cuda" else None,
            find_unused_parameters=model.lm_head.skips_parameters)


def save(cfg, trainee, meta_path, iter_num, best_val_loss, name=CKPT_NAME):
    """ckpt.pt: everything an exact resume needs (nanoGPT's keys, plus RNG and GradScaler state). best.pt
    (name=BEST_NAME): the weights alone, for sampling, a third of the size. The vocabulary is copied first:
    a checkpoint is never on disk without it."""
    if meta_path:
        copy_meta(meta_path, cfg["out_dir"])
    ckpt = checkpoint_dict(trainee.raw.state_dict(), saved_model_args(trainee.raw.config), iter_num,
                           best_val_loss, cfg)
    if name == CKPT_NAME:
        ckpt.update(optimizer=trainee.optimizer.state_dict(), rng=rng_states(),  # rng: the next dropout masks
                    scaler=trainee.scaler.state_dict(), **({"start": trainee.start} if trainee.start else {}))
    save_checkpoint(cfg["out_dir"], ckpt, name=name)


def evaluate_and_save(cfg, trainee, splits, dev, ctx, meta_path, report, iter_num, best_val_loss, lr):
    """Estimate both losses, log them, and save: best.pt when val improved, ckpt.pt as configured.
    Returns the best val loss so far."""
    report.state("evaluating", iter_num)
    losses = estimate_loss(trainee.eval_model, splits, cfg["eval_iters"], cfg["batch_size"], cfg["block_size"],
                           dev, ctx)
    report.log(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
    check_finite({f"{k} (eval)": v for k, v in losses.items()}, iter_num)
    report.state("training", iter_num, val_loss=losses["val"])
    if cfg["eval_only"]:
        return best_val_loss
    report.evaluated(cfg["out_dir"], iter_num, losses, lr, final=iter_num >= cfg["max_iters"])
    improved = losses["val"] < best_val_loss
    best_val_loss = min(best_val_loss, losses["val"])
    if improved:  # from the first eval on: a run whose val loss never beats step 0 still has a best.pt
        report.state("saving", iter_num)
        save(cfg, trainee, meta_path, iter_num, best_val_loss, name=BEST_NAME)
    # nanoGPT saves only on improvement; a small corpus that overfits early would then never be saved at all,
    # so always_save_checkpoint keeps the latest weights at every eval. Random weights (step 0 from scratch)
    # are nothing to resume from; a fine-tune's step 0 is its base.
    if (improved or cfg["always_save_checkpoint"]) and not (iter_num == 0 and cfg["init_from"] == "scratch"):
        report.state("saving", iter_num)
        save(cfg, trainee, meta_path, iter_num, best_val_loss)
        report.log(f"saved checkpoint to {cfg['out_dir']}" + (" (and best.pt)" if improved else ""))
    report.state("training", iter_num)
    return best_val_loss


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


def train_loop(cfg, trainee, splits, dev, ctx, meta_path, report, iter_num, best_val_loss, rank=0):
    """Evaluate, save and step from iter_num until max_iters or a Ctrl-C; returns True when stopped by Ctrl-C."""
    # not under DDP: the ranks would stop at different steps and wait for each other forever
    stop = StopRequest(install=report.master and not cfg["eval_only"] and not trainee.ddp, status=report.status)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    accum_steps = cfg["gradient_accumulation_steps"] // world_size  # per rank
    max_iters, t0 = cfg["max_iters"], time.time()
    while True:
        lr = lr_at(cfg, iter_num)
        for group in trainee.optimizer.param_groups:
            group["lr"] = lr
        if report.master and (iter_num % cfg["eval_interval"] == 0 or iter_num == max_iters or cfg["eval_only"]):
            best_val_loss = evaluate_and_save(cfg, trainee, splits, dev, ctx, meta_path, report, iter_num,
                                              best_val_loss, lr)
        if cfg["eval_only"] or iter_num >= max_iters:
            return False
        generator = batch_generator(cfg["seed"], iter_num, rank)
        scale = trainee.scaler.get_scale() if trainee.start else None  # read only when needed: it waits for the GPU
        loss, _ = train_step(trainee.model, trainee.optimizer, trainee.scaler,
                             lambda: get_batch(splits["train"], cfg["batch_size"], cfg["block_size"], generator, dev),
                             accum_steps, ctx, cfg["grad_clip"], trainee.ddp)
        if trainee.start and trainee.scaler.get_scale() >= scale:  # lower: float16 overflowed, the step was skipped
            pull_toward_start(trainee.raw, trainee.start, lr, cfg["weight_decay"])
        t1 = time.time()
        dt, t0 = t1 - t0, t1
        log_step(cfg, trainee.raw, report, iter_num, loss, lr, dt, world_size)
        iter_num += 1
        report.progress(iter_num, tokens_per_iter(cfg))
        if stop.requested and iter_num < max_iters:  # at max_iters the final eval saves anyway
            report.state("saving", iter_num)
            save(cfg, trainee, meta_path, iter_num, best_val_loss)
            report.log(f"stopped at iteration {iter_num}: saved {os.path.join(cfg['out_dir'], CKPT_NAME)}; "
                       "continue with --init_from=resume")
            return True


def log_step(cfg, model, report, iter_num, loss, lr, dt, world_size):
    """Every log_interval iterations: the loss (checked for NaN), the step time and the running MFU."""
    mfu = None
    if iter_num % cfg["log_interval"] == 0 and report.master:
        lossf = loss.item()  # waits for the GPU: only when logging
        check_finite({"training": lossf}, iter_num)
        if iter_num >= 5:  # the first iterations include compilation and warm-up
            mfu = model.estimate_mfu(tokens_per_iter(cfg) // world_size, dt)  # one GPU's share
        report.stepped(iter_num, dt, mfu)
        note = f", mfu {report.mfu * 100:.2f}%" if report.mfu >= 0 else ""  # none measured before iteration 5
        report.log(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.2e}, time {dt * 1000:.1f}ms{note}")
        if report.status is not None:
            report.status.update(train_loss=lossf)
    else:
        report.stepped(iter_num, dt)


def finish(trainee, report):
    """Close the bar and wandb; under DDP check the ranks agree and tear the process group down."""
    report.close()
    if trainee.ddp:
        ranks_in_sync(trainee.raw, report.log)
        # DDP's reducer holds on to the process group; left for interpreter shutdown, gloo's threads
        # can abort the process ("terminate called without an active exception"): free it first
        trainee.model = trainee.optimizer = None
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


def train(cfg, given, status):
    """The whole run: check the settings, set up data, devices and model, train, finish. Returns True when
    stopped early by Ctrl-C. given: the keys a config file or --key=value set."""
    check_config(cfg, given)
    cfg = base_shape(cfg, given)
    train_data, val_data, meta, meta_path = load_dataset(dataset_dir(cfg["dataset"]), cfg["block_size"])
    # under torchrun each process is one rank; only rank 0 (master) logs, evaluates and saves
    rank, local_rank, world_size, run_device = setup_ddp(cfg["device"])
    report = RunReport(master=rank == 0, status=status)
    dev, device_type, run_dtype, ctx = setup(run_device, cfg["dtype"], cfg["seed"])
    if cfg["passes"]:  # the same steps on a resume: train.bin is the same
        steps = steps_for_passes(cfg, len(train_data))
        cfg = dict(cfg, max_iters=steps, lr_decay_iters=steps)
        report.log(f"{cfg['passes']:g} passes over {len(train_data):,} train tokens: max_iters {steps:,}")
        if status is not None:
            status.update(max_iters=steps)
    report.log(f"dataset {cfg['dataset']}: vocab {meta['vocab_size'] if meta else 'GPT-2 BPE'}, "
               f"{len(train_data):,} train tokens; {tokens_per_iter(cfg):,} tokens per iteration on "
               f"{world_size} x {dev} in {run_dtype}")
    trainee, iter_num, best_val_loss, rng = build_trainee(cfg, meta, train_data, dev, device_type, run_dtype, report)
    wrap_for_training(trainee, cfg, train_data, dev, ctx, local_rank, device_type)
    if report.master and not cfg["eval_only"]:
        report.begin(cfg["out_dir"], cfg["max_iters"], iter_num, resumed=cfg["init_from"] == "resume")
    if rng is not None:
        set_rng_states(rng)  # last: building the model and the compile trial above drew from the RNG too
    stopped = train_loop(cfg, trainee, {"train": train_data, "val": val_data}, dev, ctx, meta_path, report,
                         iter_num, best_val_loss, rank)
    finish(trainee, report)
    return stopped


def main(argv=None):
    given = set()
    cfg = configure(DEFAULTS, sys.argv[1:] if argv is None else argv, __file__, given)
    if cfg is None:
        return  # --help was printed
    status = start_status(cfg)
    try:
        stopped = train(cfg, given, status)
    except UserError as e:
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
