"""
The model a run starts from: fresh, resumed from out_dir/ckpt.pt, a model folder grown to the dataset's
vocabulary (a fine-tune), or GPT-2; and the shape a resume or fine-tune keeps. Used by train.py.
"""

import os
import sys

import torch

from babygpt.checkpoint import (META_NAME, MODEL_ARGS, is_model_folder, is_pretrained, load_checkpoint, load_meta,
                                load_pretrained, model_from_checkpoint, read_model_args)
from babygpt.errors import UserError
from model import GPT, GPTConfig


SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "adaptive_head")  # what a checkpoint fixes


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


def pull_toward_start(model, start, lr, weight_decay):
    """After an AdamW step, which shrank each decayed matrix p by lr * weight_decay * p, give back
    lr * weight_decay * p0 (p0: start[name], its value at step 0): the decay pulls toward p0, not zero
    (L2-SP). A fine-tune on a small text then keeps what the base knew where the text does not disagree."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in start:
                p.add_(start[name], alpha=lr * weight_decay)
