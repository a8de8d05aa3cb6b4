"""
Export a babygpt model to Hugging Face transformers, and optionally upload it to the Hub.

    python hfexport.py --out_dir=out-chinese --hf_dir=hf/hlm
    python hfexport.py --out_dir=pretrained/hlm --hf_dir=hf/hlm --push_to_hub=yourname/hlm
    make hf                                   # every shipped model in pretrained/ into hf/

The folder holds what transformers reads offline (AutoModelForCausalLM, AutoTokenizer,
pipeline("text-generation")): config.json (GPT-2's, with the run's sizes), model.safetensors (float32),
generation_config.json (sample.py's defaults, never past the context), tokenizer.json and tokenizer_config.json
(one token per character with meta.pkl's ids, then <unk>) and README.md, a model card with the Hub's metadata.
sample.py and train.py read it back with --init_from=<folder>. (pretrained/export.py makes the shipped
babygpt folder; this script turns that folder, or any run, into a Hugging Face one.)
"""

import os
import shutil
import sys
import tempfile

import torch

from babygpt.checkpoint import best_hint, clean_state_dict, find_meta, load_checkpoint, load_meta, read_model_args
from configurator import configure, settings
from model import CONV1D  # GPT-2's layers whose weights transformers keeps transposed
from babygpt.progress import read_log
from babygpt.errors import UserError, first_line, run_main
from babygpt.sampleformat import format_sample

# -----------------------------------------------------------------------------
out_dir = "out-chinese"  # the run (or shipped model) to export: its checkpoint and meta.pkl
ckpt = "ckpt.pt"         # the checkpoint in out_dir: ckpt.pt (latest save) or best.pt (lowest val loss)
hf_dir = ""              # the folder to write (new, or an earlier export); empty: hf/<out_dir's name>
push_to_hub = ""         # user/name: also upload the folder to the Hugging Face Hub (needs `hf auth login`)
license = "mit"          # the card's license, a Hub license id (mit, apache-2.0, cc-by-4.0, other)
datasets = ""            # the card's datasets, comma-separated Hub ids; empty: the run's dataset name
samples = 3              # unedited samples from sample.py on the card (0: none)
sample_length = 200      # characters per sample on the card
# -----------------------------------------------------------------------------
DEFAULTS = settings(globals())
UNK = "<unk>"  # appended after meta.pkl's ids. A prompt holding the literal text "<unk>" reads as this token
EXPORT_FILES = ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                "tokenizer_config.json", "README.md")


def hub_login(repo_id):
    """Who is logged in to the Hub, asked before anything is written; a one-line UserError otherwise."""
    from huggingface_hub import constants, whoami
    from huggingface_hub.errors import LocalTokenNotFoundError
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(f"--push_to_hub={repo_id}: give the Hub repository as user/name (or org/name)")
    if constants.HF_HUB_OFFLINE:
        raise UserError("--push_to_hub: offline (HF_HUB_OFFLINE is set); unset it to upload, or export "
                        "without --push_to_hub and upload the folder later")
    try:
        return whoami()["name"]
    except LocalTokenNotFoundError:
        raise UserError("--push_to_hub: not logged in to the Hugging Face Hub; run `hf auth login` "
                        "or set HF_TOKEN to a write token") from None
    except Exception as e:  # no network, a proxy, a refused token: huggingface_hub raises many kinds
        raise UserError(f"--push_to_hub: cannot reach the Hugging Face Hub or the token was refused "
                        f"({type(e).__name__}: {first_line(e, 160)}); check the network and `hf auth whoami`") from None


def read_run(cfg, warn):
    """The checkpoint and vocabulary to export, refused here if transformers could not hold them."""
    checkpoint = load_checkpoint(cfg["out_dir"], name=cfg["ckpt"])
    hint = best_hint(cfg["out_dir"], cfg["ckpt"], checkpoint)
    if hint:
        warn(f"note: {hint}")
    args = read_model_args(checkpoint)
    if args["adaptive_head"]:
        raise UserError(f"{cfg['out_dir']} was trained with adaptive_head={args['adaptive_head']}: its head is an "
                        "adaptive softmax, not GPT-2's tied one, so transformers cannot load it; "
                        "train with adaptive_head=0")
    meta_path = find_meta(cfg["out_dir"], checkpoint)
    if meta_path is None:
        raise UserError(f"no meta.pkl beside {cfg['out_dir']}/{cfg['ckpt']} or in its dataset folder: only character "
                        "vocabularies are exported (a GPT-2 BPE run is GPT-2 already); copy its meta.pkl into out_dir")
    meta = load_meta(meta_path)
    if meta["vocab_size"] > args["vocab_size"]:
        raise UserError(f"{meta_path} has {meta['vocab_size']:,} characters but the model only "
                        f"{args['vocab_size']:,} rows: it is another run's vocabulary")
    return checkpoint, args, meta


def gpt2_config(args, meta):
    """GPT-2's configuration with babygpt's sizes: the real characters plus <unk>; padded rows are left out."""
    from transformers import GPT2Config
    unk = meta["vocab_size"]
    return GPT2Config(
        vocab_size=unk + 1, n_positions=args["block_size"], n_embd=args["n_embd"], n_layer=args["n_layer"],
        n_head=args["n_head"], activation_function="gelu_pytorch_tanh",  # model.py's nn.GELU(approximate="tanh")
        layer_norm_epsilon=1e-5, resid_pdrop=args["dropout"], embd_pdrop=args["dropout"], attn_pdrop=args["dropout"],
        bos_token_id=None, eos_token_id=None, pad_token_id=unk, tie_word_embeddings=True)


def gpt2_state_dict(ours, template, n_chars):
    """Our weights under transformers' names and shapes. template: a fresh GPT2LMHeadModel's state_dict.
    The embedding keeps the real characters' rows and gets a zero row for <unk>; a bias=False model's
    biases are zeros (adding zero changes nothing)."""
    sd = {}
    for k, v in template.items():
        if k in ("transformer.wte.weight", "lm_head.weight"):
            sd[k] = torch.cat([ours["transformer.wte.weight"][:n_chars].float(), torch.zeros_like(v[:1])])
        elif k in ours:
            sd[k] = ours[k].float().t() if k.endswith(CONV1D) else ours[k].float()
        elif k.endswith(".bias"):
            sd[k] = torch.zeros_like(v)
        else:
            raise UserError(f"transformers' GPT-2 has a weight babygpt's model lacks: {k}")
        if sd[k].shape != v.shape:
            raise UserError(f"{k}: shape {tuple(sd[k].shape)} where transformers' GPT-2 has {tuple(v.shape)}")
    return sd


def char_tokenizer(meta, block_size):
    """A tokenizers-library tokenizer with meta.pkl's ids: every character is split off on its own
    (newlines and spaces too), looked up, and decoding fuses the characters with nothing between them.
    (A BERT-style tokenizer would put a space between every two Chinese characters of the output.)"""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {meta["itos"][i]: i for i in range(meta["vocab_size"])}
    vocab[UNK] = meta["vocab_size"]
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # any one code point
    tok.decoder = decoders.Fuse()
    # clean_up_tokenization_spaces would delete the space before punctuation: text must round-trip
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, pad_token=UNK, model_max_length=block_size,
                                   clean_up_tokenization_spaces=False)


def generation_config(args, meta):
    """sample.py's defaults for generate() and the pipeline; max_length (prompt included) is the context,
    since GPT-2's position table ends there. <unk> is suppressed, so only real characters are written."""
    import sample
    from transformers import GenerationConfig
    d = sample.DEFAULTS
    return GenerationConfig(do_sample=True, temperature=d["temperature"], top_k=d["top_k"], top_p=d["top_p"],
                            repetition_penalty=d["repetition_penalty"], max_length=args["block_size"],
                            pad_token_id=meta["vocab_size"], suppress_tokens=[meta["vocab_size"]])


def write_model(folder, checkpoint, args, meta):
    """config.json, model.safetensors, generation_config.json and the tokenizer files into folder."""
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()  # its notes on a model built from scratch are noise here
    hf_logging.disable_progress_bar()  # and so is a progress bar for writing one small file
    hf = GPT2LMHeadModel(gpt2_config(args, meta)).eval()
    hf.load_state_dict(gpt2_state_dict(clean_state_dict(checkpoint["model"]), hf.state_dict(), meta["vocab_size"]))
    hf.generation_config = generation_config(args, meta)
    hf.save_pretrained(folder)
    char_tokenizer(meta, args["block_size"]).save_pretrained(folder)


def card_samples(cfg):
    """sample.py's samples and copy report for the card, made in-process by the same generator, and the
    command that prints the same text. ([], [], None) when samples=0."""
    import sample
    if cfg["samples"] < 1:
        return [], [], None
    run = dict(sample.DEFAULTS, out_dir=cfg["out_dir"], ckpt=cfg["ckpt"], num_samples=cfg["samples"],
               max_new_tokens=cfg["sample_length"], device="cpu", dtype="float32")
    samples = sample.start_samples(run, warn=lambda line: None)
    for _ in samples.steps():
        pass
    texts = [format_sample(text, len(row)) for text, row in zip(samples.texts(), samples.rows)]
    command = (f"python sample.py --out_dir={cfg['out_dir']} --ckpt={cfg['ckpt']} --num_samples={cfg['samples']} "
               f"--max_new_tokens={cfg['sample_length']}")
    return texts, samples.copy_report(), command


def card_header(cfg, checkpoint):
    """The Hub's YAML metadata block: what the Hub shows, filters by and offers the widget for."""
    dataset = (checkpoint.get("config") or {}).get("dataset", "")
    names = [d.strip() for d in (cfg["datasets"] or os.path.basename(str(dataset).rstrip("/"))).split(",") if d.strip()]
    return ["---", "language: zh", f"license: {cfg['license']}", "library_name: transformers",
            "pipeline_tag: text-generation", "tags:", "- babygpt", "- gpt2", "- character-level",
            *(["datasets:", *(f"- {d}" for d in names)] if names else []), "---", ""]


def run_figures(checkpoint, args, meta, out_dir):
    """The card's table rows, every figure read from the checkpoint or the run's log.csv."""
    n_params = sum(v.numel() for k, v in checkpoint["model"].items()
                   if k not in ("transformer.wpe.weight", "lm_head.weight"))  # lm_head is tied to wte
    row = next((r for r in read_log(out_dir) if r["iter"] == checkpoint.get("iter_num")), None)
    logged = (f"| train / val loss at that iteration (log.csv) | {row['train_loss']:.4f} / **{row['val_loss']:.4f}** |"
              if row else f"| log.csv | none in {out_dir} for this iteration |")
    return ["| | |", "|---|---|",
            f"| shape | {args['n_layer']} layers, {args['n_head']} heads, {args['n_embd']} dims, "
            f"context {args['block_size']} characters, bias={args['bias']} |",
            f"| parameters | {n_params / 1e6:.2f}M (without position embeddings) |",
            f"| vocabulary | {meta['vocab_size']:,} characters (meta.pkl's ids) + `{UNK}` |",
            f"| iterations | {checkpoint.get('iter_num', '?')} |",
            f"| best val loss | **{float(checkpoint.get('best_val_loss', float('nan'))):.4f}** (train.py's estimate) |",
            logged]


def babygpt_commands(cfg, checkpoint, args, folder):
    """The card's lines for babygpt's users: --init_from takes a folder, so a Hub model is downloaded first."""
    local, lines = folder, []
    if cfg["push_to_hub"]:
        local = os.path.basename(cfg["push_to_hub"])
        lines = [f"    hf download {cfg['push_to_hub']} --local-dir {local}"]
    dataset = (checkpoint.get("config") or {}).get("dataset", "chinese")
    return [*lines, f"    python sample.py --init_from={local} --start=宝玉 --max_new_tokens=500",
            f"    python train.py --init_from={local} --dataset={dataset} --block_size={args['block_size']}"
            "   # fine-tune on the same characters"]


def model_card(cfg, checkpoint, args, meta, folder):
    """README.md: the metadata, how to use the folder (transformers and babygpt), the figures, the samples."""
    import sample
    texts, report, command = card_samples(cfg)
    name = cfg["push_to_hub"] or folder
    return "\n".join([
        *card_header(cfg, checkpoint),
        f"# {os.path.basename(folder.rstrip('/'))}: a character-level Chinese GPT made with babygpt", "",
        f"A GPT-2-shaped model trained by babygpt on `{(checkpoint.get('config') or {}).get('dataset', '?')}`, "
        "one token per character. transformers reads it as a GPT-2:", "",
        "```python", "from transformers import pipeline",
        f"generate = pipeline(\"text-generation\", model=\"{name}\")",
        "print(generate(\"宝玉\")[0][\"generated_text\"])", "```", "",
        f"**Context.** The model has learned {args['block_size']} positions, and GPT-2's position table ends there: "
        f"`generate` cannot write past {args['block_size']} characters, prompt included (generation_config.json's "
        "max_length). babygpt's sampler re-encodes the last half window and goes on as long as asked:", "",
        *babygpt_commands(cfg, checkpoint, args, folder), "",
        "generation_config.json holds sample.py's defaults (sampling, temperature "
        f"{sample.DEFAULTS['temperature']}, top_k {sample.DEFAULTS['top_k']}).", "",
        "## The run", "", *run_figures(checkpoint, args, meta, cfg["out_dir"]), "",
        *([f"## Samples (`{command}`, unedited)", "", "```", *texts, "```", "",
           "## Copy report of those samples (sample.py's stderr)", "", "```", *report, "```", ""] if texts else [])])


def move_into(tmp, folder):
    """The export's files replace those of an earlier export; a folder holding anything else is refused
    (checked before writing), so a mistyped --hf_dir never mixes an export into unrelated files."""
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(tmp):
        os.chmod(os.path.join(tmp, name), 0o644)  # some are written private (0600) by their library
        shutil.move(os.path.join(tmp, name), os.path.join(folder, name))


def check_hf_dir(folder):
    if os.path.isfile(folder):
        raise UserError(f"--hf_dir={folder} is a file; give a folder")
    there = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    if there and "config.json" not in there:
        raise UserError(f"--hf_dir={folder} holds other files and no earlier export; pick a new or empty folder")


def export(cfg, warn):
    """Write cfg's run to its hf_dir (built in a temporary folder, then moved in); returns the folder."""
    folder = cfg["hf_dir"] or os.path.join("hf", os.path.basename(os.path.abspath(cfg["out_dir"])))
    check_hf_dir(folder)
    checkpoint, args, meta = read_run(cfg, warn)
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".hfexport-") as tmp:
        write_model(tmp, checkpoint, args, meta)
        card = model_card(cfg, checkpoint, args, meta, folder)
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
            f.write(card)
        move_into(tmp, folder)
    return folder


def push(folder, repo_id, user, warn):
    from huggingface_hub import HfApi
    api = HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True)
        url = api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message="babygpt export")
    except Exception as e:
        raise UserError(f"--push_to_hub={repo_id}: the upload failed as {user} ({type(e).__name__}: "
                        f"{first_line(e, 160)}); the folder {folder} is written, upload it again later") from None
    warn(f"uploaded {folder} to {url}")


def main():
    cfg = configure(DEFAULTS, sys.argv[1:], __file__)
    if cfg is None:
        return
    warn = lambda line: print(line, file=sys.stderr)  # noqa: E731
    user = hub_login(cfg["push_to_hub"]) if cfg["push_to_hub"] else None  # before any file is written
    folder = export(cfg, warn)
    print(f"wrote {folder}: {', '.join(EXPORT_FILES)}")
    if user:
        push(folder, cfg["push_to_hub"], user, warn)


if __name__ == "__main__":
    run_main(main)
