"""
Saving and loading what a run leaves behind: ckpt.pt (nanoGPT's keys) and the vocabulary (meta.pkl);
and the pretrained alternatives, GPT-2's weights (transformers) and its BPE vocabulary (tiktoken), or the
character vocabulary of a folder that hfexport.py wrote.
One place for it, used by train.py, sample.py and the tests; it runs nothing on import.

Loading never runs code from the file: ckpt.pt goes through torch.load(weights_only=True) and
meta.pkl through an unpickler that builds only plain containers, strings and numbers.
"""

import dataclasses
import io
import json
import os
import pickle
import random
import zipfile

import numpy as np
import torch

from model import GPT, GPTConfig
from babygpt.atomic import write_explained
from babygpt.errors import UserError, first_line

CKPT_NAME = "ckpt.pt"  # the latest save: what --init_from=resume continues
BEST_NAME = "best.pt"  # the lowest val loss so far: weights only, for sampling
META_NAME = "meta.pkl"
OWN_ARGS = {"adaptive_head": 0}  # GPTConfig's keys that nanoGPT's lacks, and their defaults
MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout", *OWN_ARGS)


def saved_model_args(config):
    """A GPTConfig as a checkpoint's model_args. A key of OWN_ARGS is written only when it is not its default:
    nanoGPT's GPTConfig(**model_args) would refuse a key it does not know, and a plain GPT is still its format."""
    return {k: v for k, v in config.__dict__.items() if k not in OWN_ARGS or v != OWN_ARGS[k]}


def checkpoint_dict(state_dict, model_args, iter_num, best_val_loss, config):
    """What every saved checkpoint holds, in nanoGPT's keys: the weights, their shape (saved_model_args), the
    iteration, the best val loss so far and the run's settings. ckpt.pt adds what a resume needs."""
    return {"model": state_dict, "model_args": model_args, "iter_num": iter_num, "best_val_loss": best_val_loss,
            "config": config}


def save_checkpoint(out_dir, checkpoint, name=CKPT_NAME):
    """Atomic save; a full disk or an unwritable out_dir is a UserError and the old file stays whole."""
    write_explained(os.path.join(out_dir, name), lambda f: torch.save(checkpoint, f))


def rng_states():
    """Every random generator a training step can draw from, as plain data torch.load(weights_only) accepts.
    Dropout draws from torch's; numpy and python are kept too so nothing a user adds drifts on resume."""
    np_state = np.random.get_state()  # ('MT19937', uint32[624], pos, has_gauss, cached_gaussian)
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states):
    """Undo rng_states(): the resumed run draws the same dropout masks the unbroken run would have."""
    torch.set_rng_state(states["torch"].cpu())
    random.setstate(_tuples(states["python"]))
    name, keys, *rest = states["numpy"]  # keys on the GPU when a resume loaded the checkpoint there
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), *rest))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


def _tuples(x):
    """random.setstate wants tuples; a checkpoint may hand them back as lists."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def load_checkpoint(out_dir, device="cpu", name=CKPT_NAME, mmap=False):
    """Read out_dir/name (ckpt.pt, ours or nanoGPT's, or best.pt) without unpickling arbitrary objects.
    mmap=True leaves the tensors on disk until used: a cheap way to read the other keys."""
    path = os.path.join(out_dir, name)
    if not os.path.isfile(path):
        raise UserError(_missing_checkpoint(out_dir, name, path))
    if not zipfile.is_zipfile(path):  # torch.save writes a zip; a torn or foreign file is not one
        raise UserError(f"{path} is corrupt or truncated (not a torch.save zip); delete it and train again")
    try:
        return torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        reason = first_line(e, 160)
        raise UserError(f"refused to load {path}: it holds more than tensors and plain data ({reason})") from None
    except Exception as e:
        raise UserError(f"{path} is corrupt or truncated ({type(e).__name__}); delete it and train again") from None


def _missing_checkpoint(out_dir, name, path):
    """The message for a checkpoint that is not there: train one, or pick one of those that are."""
    if name == CKPT_NAME:
        return f"no checkpoint at {path}; train one first: python train.py config/train_chinese.py"
    there = sorted(f for f in os.listdir(out_dir) if f.endswith(".pt")) if os.path.isdir(out_dir) else []
    if not there:
        return f"no checkpoint at {path} (--ckpt={name}); {out_dir} holds none: train one first"
    return f"no checkpoint at {path} (--ckpt={name}); {out_dir} holds {', '.join(there)}: pick one with --ckpt=..."


def best_hint(out_dir, name, checkpoint):
    """The note for a user who samples ckpt.pt (name) while out_dir/best.pt is the better model; else None.
    ckpt.pt does not store its own weights' val loss, only the run's best so far, so we compare iterations:
    train.py rewrites best.pt at every eval that improves val loss, so a best.pt from an earlier iteration
    means the evals since then, ckpt.pt's included, did not beat it. Its val loss must also be no higher
    than the best ckpt.pt has seen (equal in the same run), or it is a stale file from another run."""
    path = os.path.join(out_dir, BEST_NAME)
    if name != CKPT_NAME or not os.path.isfile(path):
        return None
    try:
        best = load_checkpoint(out_dir, name=BEST_NAME, mmap=True)  # only its numbers are read
        best_iter, best_loss = int(best["iter_num"]), float(best["best_val_loss"])
        ckpt_iter, ckpt_best = int(checkpoint["iter_num"]), float(checkpoint["best_val_loss"])
    except (UserError, KeyError, TypeError, ValueError):
        return None  # a hint is not worth an error; --ckpt=best.pt would say what is wrong with the file
    if best_iter >= ckpt_iter or best_loss > ckpt_best:
        return None
    return (f"{path} has a lower val loss ({best_loss:.4f}, iteration {best_iter:,}) than the weights in "
            f"{CKPT_NAME} (the latest save, iteration {ckpt_iter:,}); sample it with --ckpt={BEST_NAME}")


def clean_state_dict(state_dict):
    """The keys today's GPT has: a model saved after torch.compile has them prefixed with '_orig_mod.' (stripped);
    an adaptive head saved before it became one module (babygpt/heads.py) kept its token order at 'rank'."""
    prefix = "_orig_mod."
    renamed = {"rank": "lm_head.rank"}
    state_dict = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}
    return {renamed.get(k, k): v for k, v in state_dict.items()}


def read_model_args(checkpoint):
    """saved_model_args read back: GPTConfig's keys only, OWN_ARGS' defaults where they were not written."""
    return {**OWN_ARGS, **{k: v for k, v in checkpoint["model_args"].items() if k in MODEL_ARGS}}


def model_from_checkpoint(checkpoint, **overrides):
    """Build the GPT a checkpoint describes and load its weights. overrides: e.g. dropout=0.0."""
    args = {**read_model_args(checkpoint), **overrides}
    model = GPT(GPTConfig(**args))
    model.load_state_dict(clean_state_dict(checkpoint["model"]))
    return model


def num_params(checkpoint):
    """GPT.get_num_params() of a checkpoint's model, counted from its tensors without building it: the
    position embeddings left out (as in GPT-2's counts), lm_head.weight (tied to wte) and the rank buffer too."""
    skip = ("transformer.wpe.weight", "lm_head.weight", "rank")
    return sum(v.numel() for k, v in clean_state_dict(checkpoint["model"]).items() if k not in skip)


class _PlainUnpickler(pickle.Unpickler):
    """Builds dicts, lists, tuples, strings and numbers; any class or function is refused,
    so a crafted meta.pkl cannot run code (plain pickle.load would call whatever it names)."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"meta.pkl names {module}.{name}, which is not plain data")


def load_meta(path):
    """Read a meta.pkl: {'vocab_size', 'itos', 'stoi', ...}, checked to be a usable vocabulary."""
    if not os.path.isfile(path):
        raise UserError(f"no vocabulary at {path}; run python data/chinese/prepare.py first")
    try:
        with open(path, "rb") as f:
            meta = _PlainUnpickler(io.BytesIO(f.read())).load()
    except pickle.UnpicklingError as e:
        raise UserError(f"refused to load {path}: {e}") from None
    except Exception as e:
        raise UserError(f"{path} is corrupt ({type(e).__name__}); run its prepare.py again") from None
    if not isinstance(meta, dict) or not {"vocab_size", "itos", "stoi"} <= meta.keys():
        raise UserError(f"{path} is not a vocabulary (needs vocab_size, itos, stoi); run its prepare.py again")
    return meta


def copy_meta(meta_path, out_dir):
    """Keep the vocabulary beside the checkpoint so sampling decodes with the run's own."""
    with open(meta_path, "rb") as src:
        data = src.read()
    write_explained(os.path.join(out_dir, META_NAME), lambda f: f.write(data))


def dataset_dir(dataset):
    """'chinese' -> <repo>/data/chinese; a value with a slash is taken as the folder itself."""
    if "/" in dataset or os.sep in dataset:
        return dataset
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", dataset)


def dataset_file(checkpoint, name):
    """The path of name in the dataset folder the checkpoint was trained on (its config's dataset),
    or None if the checkpoint does not say which dataset that was."""
    dataset = (checkpoint.get("config") or {}).get("dataset")
    return os.path.join(dataset_dir(dataset), name) if dataset else None


def find_meta(out_dir, checkpoint):
    """The vocabulary for a checkpoint: out_dir/meta.pkl (saved by train.py), else the meta.pkl
    of the dataset the checkpoint was trained on (where nanoGPT's sample.py looks). None if neither."""
    candidates = [os.path.join(out_dir, META_NAME), dataset_file(checkpoint, META_NAME)]
    return next((path for path in candidates if path and os.path.isfile(path)), None)


def token_dtype(meta):
    """The dtype of a dataset's .bin files: meta.pkl's dtype (uint32 above 65,536 characters), else uint16
    (nanoGPT's meta.pkl and GPT-2 BPE datasets, which have no meta.pkl)."""
    return np.dtype(meta.get("dtype", "uint16") if meta else "uint16")


def codec(meta):
    """encode(str) -> list of ids and decode(ids) -> str for a character vocabulary."""
    stoi, itos = meta["stoi"], meta["itos"]
    return (lambda s: [stoi[c] for c in s]), (lambda ids: "".join(itos[i] for i in ids))


GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")


def is_model_folder(path):
    """A folder with a model of ours (or nanoGPT's) and its vocabulary, ckpt.pt and meta.pkl: a shipped
    model such as pretrained/hlm, or a run's out_dir. train.py --init_from=<it> fine-tunes it."""
    return os.path.isfile(os.path.join(path, CKPT_NAME)) and os.path.isfile(os.path.join(path, META_NAME))


def is_pretrained(init_from):
    """init_from names a GPT-2 (gpt2, gpt2-medium, ...) or a folder saved by transformers."""
    return init_from in GPT2_NAMES or (os.path.isdir(init_from) and not is_model_folder(init_from))


def load_pretrained(init_from, dropout=0.0):
    """GPT.from_pretrained with the errors a user can fix turned into one line. Returns (model, meta):
    meta is the folder's character vocabulary (hfexport.py's tokenizer), and the model then keeps only
    those rows, so its <unk> is never sampled; meta None means GPT-2 BPE."""
    meta = char_vocabulary(init_from) if os.path.isdir(init_from) else None
    if not os.path.isdir(init_from) and not gpt2_downloaded(init_from) and not hub_reachable():
        # transformers would retry the hub for ~25 s before saying the same
        raise UserError(f"cannot load GPT-2 '{init_from}': it is not downloaded yet and the Hugging Face hub cannot "
                        "be reached; run this once online (it is cached for later), or pass a folder saved with "
                        "save_pretrained")
    try:
        model = GPT.from_pretrained(init_from, {"dropout": dropout})
    except (OSError, ValueError) as e:
        # transformers raises OSError both offline and for a folder with no model in it
        reason = first_line(e)
        raise UserError(f"cannot load GPT-2 '{init_from}' ({reason}); the named models download from the "
                        "Hugging Face hub once, offline pass a folder saved with save_pretrained") from None
    if meta is None or meta["vocab_size"] == model.config.vocab_size:
        return model, meta
    sd = model.state_dict()
    for k in ("transformer.wte.weight", "lm_head.weight"):  # tied: one tensor under two names
        sd[k] = sd[k][:meta["vocab_size"]]
    model = GPT(dataclasses.replace(model.config, vocab_size=meta["vocab_size"]))
    model.load_state_dict(sd)
    return model, meta


def gpt2_downloaded(name):
    """Is the named model's config already in the Hugging Face cache?"""
    from huggingface_hub import try_to_load_from_cache
    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def hub_reachable(timeout=5.0):
    """One request to the Hugging Face hub, no retries: can a download start at all? Offline mode
    (HF_HUB_OFFLINE=1) counts as reachable: transformers then answers at once by itself."""
    import httpx
    from huggingface_hub import constants
    if constants.HF_HUB_OFFLINE:
        return True
    try:
        httpx.head(constants.ENDPOINT, timeout=timeout)
        return True
    except httpx.HTTPError:
        return False


def char_vocabulary(folder):
    """meta.pkl's dict for a folder whose tokenizer.json has one token per character with ids 0..N-1
    (then its unknown token), as hfexport.py writes; None for any other folder (GPT-2's BPE)."""
    path = os.path.join(folder, "tokenizer.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            model = json.load(f)["model"]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a tokenizer ({type(e).__name__}); export the folder again") from None
    if model.get("type") != "WordLevel":
        return None
    stoi = {c: i for c, i in model["vocab"].items() if c != model.get("unk_token")}
    if any(len(c) != 1 for c in stoi) or sorted(stoi.values()) != list(range(len(stoi))):
        return None
    return {"vocab_size": len(stoi), "itos": {i: c for c, i in stoi.items()}, "stoi": stoi}


def gpt2_encoding():
    """tiktoken's GPT-2 BPE. tiktoken downloads its two vocabulary files on first use and caches them
    (in TIKTOKEN_CACHE_DIR if set); offline with an empty cache that fails, and we say so."""
    import tiktoken  # only runs that need BPE pay for the import
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # requests' connection errors, a proxy refusing, a truncated download ...
        raise UserError(f"GPT-2 BPE: tiktoken could not download its gpt2 vocabulary (offline? {type(e).__name__}); "
                        "connect once so tiktoken caches it (set TIKTOKEN_CACHE_DIR to keep the cache)") from None


def bpe_codec(enc):
    """encode(str) -> ids and decode(ids) -> str for a tiktoken Encoding (GPT-2's, or any other)."""
    return (lambda s: enc.encode(s, allowed_special={"<|endoftext|>"})), enc.decode
