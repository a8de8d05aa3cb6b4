"""
Write continuations of a prompt with a trained model.

    python sample.py --out_dir=out-chinese                       # 10 samples x 500 characters
    python sample.py --out_dir=out-chinese --start=宝玉 --num_samples=3
    python sample.py --out_dir=out-chinese --start=FILE:prompt.txt
    python sample.py --init_from=gpt2 --start="Hello, I'm a language model,"   # GPT-2 via transformers
    python sample.py --out_dir=out-chinese --stream=True --top_p=0.9 --repetition_penalty=1.2
    python sample.py --out_dir=out-chinese --ckpt=best.pt            # the run's lowest-val-loss model
    python sample.py --out_dir=pretrained/poetry --acrostic=春夏秋冬                # a 藏头诗 per sample
    python sample.py --out_dir=pretrained/poetry --form=七律 --start=秋夜 --num_samples=3   # 平仄 and 平水韵 rhyme
    python sample.py --out_dir=pretrained/poetry --form=对联 --start=春回大地千山秀          # its 下联
    python sample.py --help

All samples are generated as one batch with a key/value cache (babygpt/engine.py's generate_tokens);
--kv_cache=False is the exact, slow reference that re-runs the whole context for every character.
After the samples, stderr gets a copy report (copycheck.py): per sample, the longest passage it copied
verbatim from the run's train.bin and the share of its 10-character windows found there.
--form and --acrostic mask, at every step, what the poem's form does not allow (poetry.py), with the 平仄
(--tone) and the rhyme (--rhyme) of --rhyme_book: each sample is then one poem in that form, always, and ends
where the poem ends.
"""

import dataclasses
import os
import sys

import torch

from babygpt import copycheck
from babygpt import engine
from babygpt import poetry
from babygpt import rhymebook
from babygpt.charlevel import read_text  # prompts are decoded as prepare.py decodes text
from babygpt.atomic import atomic_write, explained_write
from babygpt.checkpoint import (best_hint, bpe_codec, codec, find_meta, gpt2_encoding,
                        is_model_folder, is_pretrained, load_checkpoint, load_meta, load_pretrained, model_from_checkpoint)
from configurator import configure, settings
from babygpt.progress import progress_bar
from babygpt.errors import UserError, run_main
from babygpt.runtime import setup
from babygpt.sampleformat import format_sample


# -----------------------------------------------------------------------------
init_from = "resume"    # 'resume' (out_dir/ckpt.pt), 'gpt2'...'gpt2-xl', or a folder with a saved GPT-2
out_dir = "out"         # folder holding ckpt.pt (and the run's meta.pkl)
ckpt = "ckpt.pt"        # the checkpoint in out_dir to sample: ckpt.pt (latest save) or best.pt (lowest val loss)
start = "\n"            # prompt text, or FILE:path to read the prompt from a file (UTF-8 or GB18030)
num_samples = 10        # number of samples to write (generated together, as one batch)
max_new_tokens = 500    # characters generated per sample
temperature = 0.8       # <1 sharper, >1 more random, 0 greedy
top_k = 200             # sample only among the top_k most likely characters (0: no cut)
top_p = 1.0             # nucleus sampling: keep the likeliest characters up to this total probability (1.0: off)
repetition_penalty = 1.0  # >1 makes characters already in the context less likely (1.0: off)
kv_cache = True         # False: re-run the whole context every step (exact, ~20x+ slower reference)
stream = False          # print the first sample's characters as they are generated
out_file = ""           # also write the samples to this UTF-8 text file
seed = 1337             # same seed, same samples (sample i uses seed + i)
device = "auto"         # auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps
dtype = "auto"          # auto: float16 on a CUDA GPU, float32 elsewhere; or float16, bfloat16, float32
compile = False         # torch.compile the model (pays off only for long generations on a GPU)
copy_report = True      # per sample on stderr: longest passage copied from train.bin, share of 10-char windows in it
# poems (a model trained on data/poetry): each sample is one poem, cut where it ends
form = ""               # 五绝, 七绝, 五律, 七律 (wujue, qijue, wulv, qilv), a 词牌 of the dataset (如梦令), or
                        #   对联: --start is the 上联, the sample its 下联
acrostic = ""           # 藏头诗: line i starts with character i (4 characters: a 绝句, 8: a 律诗)
rhyme = True            # with a form or an acrostic: the lines closed by 。 end in one rhyme group, none twice
tone = True             # with a regular form or an acrostic: the 平仄 of regulated verse (2nd/4th/6th characters,
                        #   line ends, 对 and 粘)
rhyme_book = "pingshui"  # tones and rhyme groups: pingshui (平水韵, the poets' own) or xinyun (中华新韵, Mandarin)
# -----------------------------------------------------------------------------
DEFAULTS = settings(globals())


def check_settings(init_from, max_new_tokens, num_samples, temperature, top_k, top_p, repetition_penalty, ckpt,
                   out_file="", rhyme_book="pingshui", **_):
    """Refuse values that cannot work before any file is read (called with all the settings: **cfg)."""
    if init_from != "resume" and not is_pretrained(init_from):
        hint = f" (a model folder is sampled with --out_dir={init_from})" if is_model_folder(init_from) else ""
        raise UserError(f"init_from must be 'resume', gpt2, gpt2-medium, gpt2-large, gpt2-xl "
                        f"or a folder with a saved GPT-2, got '{init_from}'{hint}")
    if max_new_tokens < 1 or num_samples < 1:
        raise UserError(f"max_new_tokens and num_samples must be at least 1, got {max_new_tokens} and {num_samples}")
    if temperature < 0:
        raise UserError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k < 0:
        raise UserError(f"top_k must be >= 0 (0: no cut), got {top_k}")
    if not 0 < top_p <= 1:
        raise UserError(f"top_p must be in (0, 1] (1.0 is off, 0.9 a usual value), got {top_p}")
    if not ckpt:
        raise UserError("--ckpt is empty; name a checkpoint file in out_dir, e.g. --ckpt=ckpt.pt or --ckpt=best.pt")
    if repetition_penalty <= 0:
        raise UserError(f"repetition_penalty must be > 0 (1.0 is off, 1.1-1.3 usual), got {repetition_penalty}")
    if rhyme_book not in rhymebook.BOOKS:
        raise UserError(f"--rhyme_book must be pingshui (平水韵) or xinyun (中华新韵), got '{rhyme_book}'")
    folder = os.path.dirname(os.path.abspath(out_file)) if out_file else "."
    if not os.path.isdir(folder):
        raise UserError(f"--out_file={out_file}: folder {folder} does not exist; create it or pick another path")


def read_prompt(start):
    """--start text, or the contents of the file after FILE: (UTF-8, else GB18030, like prepare.py)."""
    if not start.startswith("FILE:"):
        return start
    path = start[len("FILE:"):]
    if not os.path.isfile(path):
        raise UserError(f"prompt file '{path}' not found (given as --start=FILE:{path})")
    try:
        return read_text(path)[0]
    except UserError as e:
        raise UserError(f"prompt file {e}") from None


def known_prompt(prompt, stoi):
    """The prompt without characters the model never saw, and a warning naming those (None if
    there are none). (nanoGPT raises KeyError here: its issues #169 and #434.)"""
    unknown = sorted(set(c for c in prompt if c not in stoi))
    kept = "".join(c for c in prompt if c in stoi)
    if not kept:
        raise UserError(f"no character of the prompt is in the model's vocabulary ({''.join(unknown)!r}); "
                        "use characters from the training text")
    warning = f"warning: left out of the prompt, not in the vocabulary: {''.join(unknown)!r}" if unknown else None
    return kept, warning


def prompt_batch(prompt, meta, num_samples, dev, warn):
    """The prompt as the model's input, num_samples copies of its ids (num_samples, T), with
    decode(ids) and the prompt as kept. meta None means GPT-2 BPE. warn(line) gets the notes
    and warnings: sample.py prints them on stderr, the web page shows them."""
    if not prompt:
        raise UserError("the prompt is empty; give at least one character with --start=...")
    if meta is None:
        warn("note: no meta.pkl, so using GPT-2 BPE from tiktoken")
        encode, decode = bpe_codec(gpt2_encoding())
    else:
        encode, decode = codec(meta)
        prompt, warning = known_prompt(prompt, meta["stoi"])
        if warning:
            warn(warning)
    x = torch.tensor(encode(prompt), dtype=torch.long, device=dev)[None, ...].repeat(num_samples, 1)  # (S, T)
    return x, decode, prompt


def sample_steps(model, x, dev, seed, max_new_tokens, temperature, top_k, top_p, repetition_penalty, kv_cache,
                 constraint=None, seeds=None, **_):
    """Generate all rows of x (S, T) together; yields each step's new ids (S, 1). A constraint (a poem's
    form, poetry.py) masks what may come next and ends generation once every row's poem is done.
    seeds: one per row (serve.py batches rows of several requests); default seed + i for row i."""
    # one generator per sample: sample i's text depends on its own seed only, not on num_samples
    seeds = [seed + i for i in range(len(x))] if seeds is None else seeds
    if constraint is not None:  # enough steps for the longest poem of the form, whatever --max_new_tokens says
        max_new_tokens = max(max_new_tokens, constraint.max_new_tokens)
    return engine.generate_tokens(model, x, max_new_tokens, temperature, top_k, top_p=top_p,
                                  repetition_penalty=repetition_penalty, generators=engine.row_generators(seeds, dev),
                                  kv_cache=kv_cache, constraint=constraint)


def load_model(init_from, out_dir, device, ckpt_name="ckpt.pt", warn=None):
    """The model to sample and its vocabulary: (model, meta or None). None means GPT-2 BPE.
    warn(line) gets the hint that best.pt is better (default: printed on stderr)."""
    if is_pretrained(init_from):
        return load_pretrained(init_from)  # a folder with a character tokenizer brings its meta
    checkpoint = load_checkpoint(out_dir, device, name=ckpt_name)
    hint = best_hint(out_dir, ckpt_name, checkpoint)
    if hint:
        (warn or (lambda line: print(line, file=sys.stderr)))(f"note: {hint}")
    model = model_from_checkpoint(checkpoint, dropout=0.0)
    meta_path = find_meta(out_dir, checkpoint)
    # a run with GPT-2's vocabulary (data/openwebtext) has no meta.pkl; a character run must have one
    if meta_path is None and model.config.vocab_size < 50257:
        raise UserError(f"no meta.pkl beside {out_dir}/ckpt.pt or in its dataset folder; "
                        "run the dataset's prepare.py, or copy its meta.pkl into out_dir")
    return model, (load_meta(meta_path) if meta_path else None)


@dataclasses.dataclass
class Samples:
    """One call's samples as they grow. start_samples() builds it; steps() generates. sample.py's main,
    the web page and bench.py all sample through this, so they write the same text for the same settings."""
    cfg: dict
    model: torch.nn.Module
    meta: dict | None      # the vocabulary; None: GPT-2 BPE
    decode: object         # ids -> text
    prompt: str            # the prompt as kept (characters the model never saw left out); row 0's if several
    x: torch.Tensor        # the prompt's ids, one row per sample (S, T)
    dev: str
    ctx: object            # autocast context (a no-op in float32)
    constraint: object = None  # a poem's form (poetry.constraint_for), or None
    shown: str = None      # the prompt as printed when it is not the model's (a 对联's 上联 on its row), or None
    rows: list = None      # each sample's ids so far, prompt included
    seeds: list = None     # one seed per row; None: cfg's seed + i

    def steps(self):
        """Generate; at each step yield the new text of every sample (a list of num_samples strings)."""
        self.rows = self.x.tolist()
        steps = sample_steps(self.model, self.x, self.dev, constraint=self.constraint, seeds=self.seeds, **self.cfg)
        while True:
            done = self.constraint.done.tolist() if self.constraint is not None else [False] * len(self.rows)
            with torch.no_grad(), self.ctx:  # entered per step: the page may resume us from another thread
                idx_next = next(steps, None)  # (S, 1)
            if idx_next is None:
                return
            ids = idx_next[:, 0].tolist()
            for row, i in zip(self.rows, ids):
                row.append(i)
            yield ["" if finished else self.decode([i]) for i, finished in zip(ids, done)]  # a done poem waits

    def texts(self):
        """Every sample's whole text so far, prompt included; a poem is cut where it ends."""
        if self.shown is None:
            texts = [self.decode(row) for row in self.rows]
        else:  # the model read the 上联 and a comma; the reader sees the 上联 on its row, the 下联 on the next
            texts = [self.shown + self.decode(row[self.x.size(1):]) for row in self.rows]
        if self.constraint is not None:
            texts = [poetry.cut_poem(t, start=len(self.printed_prompt())) for t in texts]
        return texts

    def printed_prompt(self):
        return self.prompt if self.shown is None else self.shown

    def new_ids(self):
        """Each sample's generated ids (the prompt left out), as far as texts() shows them."""
        T = self.x.size(1)
        if self.constraint is None:
            return [row[T:] for row in self.rows]
        return [row[T:T + len(text) - len(self.printed_prompt())] for row, text in zip(self.rows, self.texts())]

    def copy_report(self):
        """copycheck's lines for the generated part (the prompt is the user's, so left out)."""
        run_dir = None if is_pretrained(self.cfg["init_from"]) else self.cfg["out_dir"]  # GPT-2's text is not here
        return copycheck.report_lines(run_dir, self.cfg["ckpt"], self.meta, self.new_ids(), self.decode)


def load_for_sampling(cfg, warn):
    """Checks, device and model, done once: (model, meta, dev, ctx). serve.py loads so and then samples
    many batches (samples_over); start_samples does both for one batch."""
    check_settings(**cfg)
    dev, _, _, ctx = setup(cfg["device"], cfg["dtype"], cfg["seed"])
    model, meta = load_model(cfg["init_from"], cfg["out_dir"], dev, cfg["ckpt"], warn=warn)
    model.eval().to(dev)
    if cfg["compile"]:
        model = torch.compile(model)
    return model, meta, dev, ctx


def samples_over(cfg, loaded, decode, x, prompts, seeds=None, shown=None):
    """A Samples of x (S, T) on a loaded model (load_for_sampling's tuple): prompts, one per row, are
    the rows' kept texts, all T characters long for a character model; seeds one per row (None: seed + i).
    cfg's form, acrostic, rhyme and tone make each row one poem; shown: the prompt as printed (a 上联)."""
    model, meta, dev, ctx = loaded
    constraint = poetry.constraint_for(meta, cfg["form"], cfg["acrostic"], cfg["rhyme"], prompts, len(x),
                                       tone=cfg["tone"], rhyme_book=cfg["rhyme_book"])
    return Samples(cfg, model, meta, decode, prompts[0], x, dev, ctx, constraint, shown, seeds=seeds)


def start_samples(cfg, warn):
    """Settings in, a Samples ready to generate out: checks, device, model, prompt. warn(line) gets the
    notes and warnings (sample.py prints them on stderr, the page shows them)."""
    loaded = load_for_sampling(cfg, warn)
    text, shown = read_prompt(cfg["start"]), None
    if poetry.is_couplet(cfg["form"]):  # the prompt is a 上联: checked whole, before unknown characters are dropped
        text, shown = poetry.couplet_prompt(text, loaded[1], rhymebook.book(cfg["rhyme_book"]))
    x, decode, prompt = prompt_batch(text, loaded[1], cfg["num_samples"], loaded[2], warn)
    return samples_over(cfg, loaded, decode, x, [prompt] * len(x), shown=shown)


def print_samples(samples, stream):
    """Generate and print: each text, the separator and torch.Size([1, N]), the format nanoGPT's sample.py
    prints. With stream, the first sample's characters appear as they come; else a bar with ETA (terminal)."""
    bar = None if stream else progress_bar(samples.cfg["max_new_tokens"], desc="characters")
    if stream:
        print(samples.printed_prompt(), end="", flush=True)
    held = ""  # newlines shown only once more text follows: a poem's closing blank row is not part of it
    for pieces in samples.steps():
        if not stream:
            bar.update()
        elif pieces[0] == "\n":
            held += "\n"
        elif pieces[0]:
            print(held + pieces[0], end="", flush=True)
            held = ""
    if stream:
        print("" if samples.constraint is not None else held)
    else:
        bar.close()
    texts = samples.texts()
    for i, (text, new) in enumerate(zip(texts, samples.new_ids())):
        shown = format_sample(text, samples.x.size(1) + len(new))
        print(shown[len(text) + 1:] if stream and i == 0 else shown)  # the streamed sample's text is on screen
    return texts


def main():
    cfg = configure(DEFAULTS, sys.argv[1:], __file__)
    if cfg is None:
        return
    warn = lambda line: print(line, file=sys.stderr)  # noqa: E731
    samples = start_samples(cfg, warn)
    texts = print_samples(samples, cfg["stream"])
    if cfg["out_file"]:
        data = "".join(format_sample(t) + "\n" for t in texts).encode("utf-8")
        with explained_write(cfg["out_file"], "free disk space or choose another --out_file"):
            atomic_write(cfg["out_file"], lambda f: f.write(data))
        warn(f"wrote {len(texts)} samples to {cfg['out_file']}")
    if cfg["copy_report"]:  # last, on stderr, so stdout keeps nanoGPT's format
        warn("\n".join(samples.copy_report()))


if __name__ == "__main__":
    run_main(main)
