"""
What every script needs before it touches a model: the device, the dtype and its autocast
context, compile with a safe fallback, and joining torchrun's process group.
Imported by train.py, sample.py, bench.py, web.py and serve.py; it runs nothing on import.
"""

import contextlib
import os
import sys

import torch

from babygpt.errors import UserError, first_line


# the addresses that reach this machine only: web.py and serve.py need a login or key for any other --host
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def pick_device(device):
    """'auto' -> cuda, then mps, then cpu. An explicit device that is not there is an error."""
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}' asked for, but this torch sees no CUDA GPU; use --device=cpu (or auto)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device '{device}' asked for, but MPS is not available; use --device=cpu (or auto)")
    if kind not in ("cuda", "mps", "cpu"):
        raise UserError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps")
    return device


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def setup(device, dtype, seed):
    """Seed torch and choose device and precision. Returns (device, device_type, dtype, ctx):
    ctx is the autocast context for forward passes (a no-op in float32).
    dtype 'auto' is float16 on a CUDA GPU (with GradScaler; every CUDA GPU has it, a V100 has no bfloat16)
    and float32 elsewhere, where half-precision autocast is slower. A half dtype asked for by name runs
    anywhere, with a note where it is slow."""
    if dtype != "auto" and dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; use auto, float32, bfloat16 or float16")
    device = pick_device(device)
    device_type = device.split(":")[0]
    torch.manual_seed(seed)
    if dtype == "auto":
        dtype = "float16" if device_type == "cuda" else "float32"
    elif device_type != "cuda" and dtype != "float32":
        print(f"note: {dtype} on {device_type} is slower than float32 here; --dtype=auto picks float32",
              file=sys.stderr)
    if device_type == "cuda":
        if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            raise UserError("this GPU has no bfloat16 (V100 and older); use --dtype=float16")
        # TF32 matmuls on Ampere and newer: ~fp32 accuracy at several times the speed
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ptdtype = DTYPES[dtype]
    if ptdtype == torch.float32:
        ctx = contextlib.nullcontext()
    else:
        ctx = torch.autocast(device_type=device_type, dtype=ptdtype)
    return device, device_type, dtype, ctx


def compile_or_eager(model, trial):
    """torch.compile(model) if it works here, else model unchanged with a warning.
    Compilation happens lazily at the first call, so trial(compiled) runs one real step
    inside the try: a missing C compiler or an unsupported GPU then costs a warning, not the run."""
    try:
        compiled = torch.compile(model)
        trial(compiled)
        return compiled
    except Exception as e:  # torch raises many kinds here (BackendCompilerFailed, OSError, ...)
        print(f"warning: torch.compile failed ({type(e).__name__}: {first_line(e)}); running eager", file=sys.stderr)
        return model


def setup_ddp(device):
    """Join the process group when launched by torchrun (it sets RANK, LOCAL_RANK, WORLD_SIZE).
    Returns (rank, local_rank, world_size, device); without torchrun: (0, 0, 1, device) and no group.
    NCCL is the backend for CUDA GPUs (one per process: cuda:LOCAL_RANK), gloo for CPU."""
    if "RANK" not in os.environ:
        return 0, 0, 1, device
    import torch.distributed as dist
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
        if local_world > torch.cuda.device_count():  # checked on every rank alike, so rank 0 says it
            raise UserError(f"{local_world} processes on this machine but {torch.cuda.device_count()} GPUs; "
                            "set --nproc_per_node to at most the number of GPUs")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    elif device == "auto":
        device = "cpu"  # MPS has no collective backend
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return rank, local_rank, world_size, device


@torch.no_grad()
def ddp_weight_spread(model):
    """The largest difference of any weight between ranks (0.0 when DDP kept them in sync).
    Elementwise max minus min over all ranks, one parameter at a time to stay light on memory."""
    import torch.distributed as dist
    spread = torch.zeros((), device=next(model.parameters()).device)
    for p in model.parameters():
        hi, lo = p.detach().clone(), p.detach().clone()
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        spread = torch.maximum(spread, (hi - lo).abs().max())
    return spread.item()
