"""
Poems measured: form, rhyme, 平仄, repeats, copies and titles of the poems a model writes for val titles, beside the
real val poems, under each of sample.py's poem options (none, --form=七绝 with and without tone and rhyme, an
acrostic); and the 下联 it writes to the 上联 of held-out real couplets (the 颔联 and 颈联 of the val split's 律诗),
with no option and with --form=对联, beside the real 下联.

    python experiments/poems.py --num_samples=200 --per_title=8 --couplets=100      # pretrained/poetry
    python experiments/poems.py --run=out-poetry --num_samples=40 --json
    python experiments/poems.py --what=couplets --couplets=100
    python experiments/poems.py --dataset=poetry --num_samples=100     # on data/poetry's val titles (唐诗 + 宋词)

Poems: --num_samples in all, --per_title of them (one batch) for each of a fixed draw of val titles, 160 characters
at most, each cut where its poem ends; the figures are babygpt.poetry.measure's, the titles' poetry.title_rate's
(against train.bin's titles, for the real poems and the acrostic, which writes its own title as `make demo` does).
Couplets: --per_title 下联 to each of --couplets real 上联 that end on 仄 and are in the vocabulary; the figures are
babygpt.poetry.measure_couplets'. The titles, couplets and the corpus of copies come from the run's own dataset,
or --dataset: two models compare on one dataset's val titles when their vocabularies hold its characters.
pretrained/export.py runs it for the poetry model's card.
"""

import argparse
import json
import os
import random
import re

import numpy as np

import sample
from babygpt import poetry
from babygpt import rhymebook
from babygpt.checkpoint import codec, dataset_dir, load_checkpoint, load_meta, token_dtype
from babygpt.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def val_poems(dataset_path):
    """The val split's poems as (title, body), from the dataset's val.bin and meta.pkl (data/poetry's layout)."""
    meta = load_meta(os.path.join(dataset_path, "meta.pkl"))
    ids = np.fromfile(os.path.join(dataset_path, "val.bin"), dtype=token_dtype(meta))
    records = codec(meta)[1](ids.tolist()).split("\n\n")
    return [poetry.split_title(r) for r in records if r.strip()]


def poem_settings(title, body, setting):
    """sample.py's settings for one of SETTINGS on one val title ({} when it does not apply)."""
    if setting == "acrostic":  # the real poem's own line heads, when it has 4 or 8 lines
        heads = "".join(line[:1] for line in poetry.poem_lines(body))
        return {"acrostic": heads} if len(heads) in (4, 8) and all(map(poetry.is_han, heads)) else {}
    # --tone and --rhyme are on by default with a form: "bare" is the form alone, as sampling was before them
    return {"": {}, "bare": {"form": "七绝", "tone": False, "rhyme": False}, "form": {"form": "七绝"}}[setting]


def write_poems(cfg, titles, bodies, setting, per_title):
    """[(title, poem)]: per_title samples for each title, each cut where its poem ends. The prompt is the title and
    its newline; the acrostic has none, so the model writes its own title, as in `make demo`. Title i's samples
    take seeds seed + i * per_title on: no two titles share a seed, so their samples do not start alike."""
    poems = []
    for i, (title, body) in enumerate(zip(titles, bodies)):
        extra = poem_settings(title, body, setting)
        if setting and not extra:
            continue
        start = "\n" if setting == "acrostic" else title + "\n"
        seed = cfg["seed"] + i * per_title
        samples = sample.start_samples(dict(cfg, start=start, num_samples=per_title, seed=seed, **extra),
                                       warn=lambda line: None)
        for _ in samples.steps():
            pass
        # without a poem option a sample runs on past its poem's end: cut it there, as sample.py cuts a poem
        texts = [poetry.cut_poem(text, len(start)).lstrip("\n") for text in samples.texts()]
        poems += [(row, poem) for row, _, poem in (text.partition("\n") for text in texts)]
    return poems


SETTINGS = {"": "no option", "bare": "七绝 tone, rhyme off", "form": "--form=七绝",
            "acrostic": "--acrostic, own title"}
ROWS = [("poems", "{:.0f}"), ("form_rate", "{:.3f}"), ("rhyme_rate", "{:.3f}"), ("tone_rate", "{:.3f}"),
        ("pingshui_rate", "{:.3f}"), ("rule_rate", "{:.3f}"), ("repeat_rate", "{:.3f}"), ("copied_lines", "{:.3f}"),
        ("longest_copy", "{:.0f}"), ("title_in_corpus", "{:.3f}"), ("title_from_words", "{:.3f}")]


def print_table(figures, rows):
    """figures {column: {key: value}} as a table, one row per (key, format) of rows; '-' for None or no key."""
    print(f"{'':<22}" + "".join(f"{label[:24]:>26}" for label in figures))
    for key, fmt in rows:
        cells = ["-" if f.get(key) is None else fmt.format(f[key]) for f in figures.values()]
        print(f"{key:<22}" + "".join(f"{c:>26}" for c in cells))


def measure_poems(args, run_dir, dataset_path):
    """Form, rhyme, 平仄, repeats, copies and titles of poems written for val titles, beside the real val poems:
    {column: figures}. Titles are measured where they are not the prompt: the real ones and the acrostic's."""
    pairs = random.Random(1337).sample(val_poems(dataset_path), args.num_samples // args.per_title)
    titles, bodies = [t for t, _ in pairs], [b for _, b in pairs]
    meta = load_meta(os.path.join(dataset_path, "meta.pkl"))
    corpus = np.memmap(os.path.join(dataset_path, "train.bin"), dtype=token_dtype(meta), mode="r")
    corpus_titles = poetry.corpus_titles(codec(meta)[1](corpus.tolist()))
    cfg = dict(sample.DEFAULTS, out_dir=run_dir, device="cpu", max_new_tokens=160, copy_report=False)
    columns = {"real val poems": pairs}
    for setting, label in SETTINGS.items():
        columns[label] = write_poems(cfg, titles, bodies, setting, args.per_title)
    figures = {}
    for label, poems in columns.items():
        figures[label] = poetry.measure([p for _, p in poems], corpus, meta["stoi"])
        if label in ("real val poems", SETTINGS["acrostic"]):
            figures[label].update(poetry.title_rate([f"{t}\n{p}" for t, p in poems], corpus_titles))
    if not args.json:
        print(f"poems for {len(titles)} val titles of {os.path.relpath(dataset_path, ROOT)}, {args.per_title} each, "
              f"from {run_dir}")
        print_table(figures, ROWS)
        for label, poems in columns.items():
            print(f"\n{label}, the first two:\n" + "\n\n".join(f"{t}\n{p}" for t, p in poems[:2]))
    return figures


# -----------------------------------------------------------------------------
# 对联: the model's 下联 to the 上联 of held-out real couplets

def takes_upper(upper, meta, book):
    """Whether sample.py's --form=对联 takes upper as a 上联 (poetry.couplet_prompt: it ends on 仄, every
    character is in the vocabulary)."""
    try:
        poetry.couplet_prompt(upper, meta, book)
        return True
    except UserError:
        return False


def held_out_couplets(poems, meta, book):
    """The 颔联 and 颈联 (lines 3-4 and 5-6) of the 律诗 among poems [(title, body)] as (上联, 下联), those whose
    上联 --form=对联 takes (takes_upper)."""
    lvshi = [poetry.poem_lines(b) for _, b in poems if poetry.form_of(b) in ("五律", "七律")]
    pairs = [(lines[i], lines[i + 1]) for lines in lvshi for i in (2, 4)]
    return [(upper, lower) for upper, lower in pairs if takes_upper(upper, meta, book)]


def write_lowers(cfg, upper, setting):
    """The 下联 a model writes to upper, cfg's num_samples of them: with --form=对联 (setting 'form'), or with no
    option (setting ''), reading the 上联 and a comma as the form's prompt does, its line up to the next mark."""
    if setting == "form":
        cfg = dict(cfg, start=upper, form=poetry.COUPLET)
    else:
        cfg = dict(cfg, start=upper + "，", max_new_tokens=len(upper) + 1)
    samples = sample.start_samples(cfg, warn=lambda line: None)
    for _ in samples.steps():
        pass
    shown = len(samples.printed_prompt())
    return [re.split(f"[{poetry.LINE_END}\n]", text[shown:])[0] for text in samples.texts()]


COUPLET_SETTINGS = {"": "no option", "form": "--form=对联"}
COUPLET_ROWS = [("couplets", "{:.0f}"), ("in_form", "{:.3f}"), ("same_tones", "{:.3f}"),
                ("tones_compared", "{:.0f}")]


def measure_couplets(args, run_dir, dataset_path):
    """The model's 下联 to args.couplets real 上联 of the val split's 律诗, per_title each, beside the real 下联:
    {column: figures} (poetry.measure_couplets)."""
    meta = load_meta(os.path.join(dataset_path, "meta.pkl"))
    held_out = held_out_couplets(val_poems(dataset_path), meta, rhymebook.book("pingshui"))
    pairs = random.Random(1337).sample(held_out, min(args.couplets, len(held_out)))
    cfg = dict(sample.DEFAULTS, out_dir=run_dir, device="cpu", num_samples=args.per_title, copy_report=False)
    columns = {"real 下联": [(u, r, r) for u, r in pairs]}
    for setting, label in COUPLET_SETTINGS.items():
        columns[label] = [(u, r, w) for i, (u, r) in enumerate(pairs)  # seeds as write_poems gives them
                          for w in write_lowers(dict(cfg, seed=cfg["seed"] + i * args.per_title), u, setting)]
    figures = {label: poetry.measure_couplets(couplets) for label, couplets in columns.items()}
    if not args.json:
        print(f"\n下联 to {len(pairs)} of the {len(held_out)} 上联 (颔联 and 颈联 of the val split's 律诗, ending on 仄, "
              f"in the vocabulary), {args.per_title} each, from {run_dir}")
        print_table(figures, COUPLET_ROWS)
        print("\nthe first three: 上联, the real 下联, " + ", ".join(COUPLET_SETTINGS.values()))
        for i, (upper, real) in enumerate(pairs[:3]):
            written = [columns[label][i * args.per_title][2] for label in COUPLET_SETTINGS.values()]
            print("  ".join([upper, real, *written]))
    return figures


WHAT = {"poems": measure_poems, "couplets": measure_couplets}


def main():
    p = argparse.ArgumentParser(description="poems a model writes for val titles, measured beside the real ones")
    p.add_argument("--run", default="pretrained/poetry", help="the run or shipped model to sample")
    p.add_argument("--num_samples", type=int, default=10, help="poems in all (use 200)")
    p.add_argument("--per_title", type=int, default=4, help="samples per val title (a batch)")
    p.add_argument("--couplets", type=int, default=10, help="real 上联 the model writes a 下联 to (use 100)")
    p.add_argument("--what", choices=["all", *WHAT], default="all", help="poems, couplets, or both (all)")
    p.add_argument("--dataset", help="the dataset of the val titles, couplets and copies (default: the run's own)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON line instead of tables: {what: {column: figures}}")
    args = p.parse_args()
    run_dir = args.run
    dataset_path = dataset_dir(args.dataset or load_checkpoint(run_dir, mmap=True)["config"]["dataset"])
    figures = {what: WHAT[what](args, run_dir, dataset_path) for what in WHAT if args.what in ("all", what)}
    if args.json:
        print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()
