"""
Poems measured: form, rhyme, 平仄, repeats and copies of the poems a model writes for val titles, beside the real
val poems, under each of sample.py's poem options (none, --form=七绝 with and without tone and rhyme, an acrostic).

    python experiments/poems.py --num_samples=200 --per_title=8                       # pretrained/poetry
    python experiments/poems.py --run=out-poetry --num_samples=40 --json

--num_samples poems in all, --per_title of them (one batch) for each of a fixed draw of val titles, 160 characters
at most, each cut where its poem ends; the figures are babygpt.poetry.measure's. pretrained/export.py runs it for
the poetry model's card.
"""

import argparse
import json
import os
import random

import numpy as np

import sample
from babygpt import poetry
from babygpt.checkpoint import codec, dataset_dir, load_checkpoint, load_meta, token_dtype

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
    """[(title, poem)]: per_title samples for each title (the prompt: the title and its newline), each cut
    where its poem ends and without its title row."""
    poems = []
    for title, body in zip(titles, bodies):
        extra = poem_settings(title, body, setting)
        if setting and not extra:
            continue
        samples = sample.start_samples(dict(cfg, start=title + "\n", num_samples=per_title, **extra),
                                       warn=lambda line: None)
        for _ in samples.steps():
            pass
        # without a poem option a sample runs on past its poem's end: cut it there, as sample.py cuts a poem
        poems += [(title, poetry.cut_poem(text, len(title) + 1).partition("\n")[2]) for text in samples.texts()]
    return poems


SETTINGS = {"": "no option", "bare": "七绝 tone, rhyme off", "form": "--form=七绝", "acrostic": "--acrostic=<real heads>"}


def measure_poems(args):
    """Form, rhyme, repeats and copies of poems written for val titles, beside the real val poems."""
    run_dir = args.run
    dataset_path = dataset_dir(load_checkpoint(run_dir, mmap=True)["config"]["dataset"])
    pairs = random.Random(1337).sample(val_poems(dataset_path), args.num_samples // args.per_title)
    titles, bodies = [t for t, _ in pairs], [b for _, b in pairs]
    corpus = np.memmap(os.path.join(dataset_path, "train.bin"), dtype=np.uint16, mode="r")
    stoi = load_meta(os.path.join(dataset_path, "meta.pkl"))["stoi"]
    cfg = dict(sample.DEFAULTS, out_dir=run_dir, device="cpu", max_new_tokens=160, copy_report=False)
    columns = {"real val poems": pairs}
    for setting, label in SETTINGS.items():
        columns[label] = write_poems(cfg, titles, bodies, setting, args.per_title)
    figures = {label: poetry.measure([p for _, p in poems], corpus, stoi) for label, poems in columns.items()}
    if args.json:
        print(json.dumps(figures, ensure_ascii=False))
        return
    print(f"poems for {len(titles)} val titles of {os.path.relpath(dataset_path, ROOT)}, {args.per_title} each, "
          f"from {run_dir}")
    print(f"{'':<22}" + "".join(f"{label[:24]:>26}" for label in columns))
    for key, fmt in [("poems", "{:.0f}"), ("form_rate", "{:.3f}"), ("rhyme_rate", "{:.3f}"), ("tone_rate", "{:.3f}"),
                     ("pingshui_rate", "{:.3f}"), ("repeat_rate", "{:.3f}"),
                     ("copied_lines", "{:.3f}"), ("longest_copy", "{:.0f}")]:
        cells = ["-" if f[key] is None else fmt.format(f[key]) for f in figures.values()]
        print(f"{key:<22}" + "".join(f"{c:>26}" for c in cells))
    for label, poems in columns.items():
        print(f"\n{label}, the first two:\n" + "\n\n".join(f"{t}\n{p}" for t, p in poems[:2]))


def main():
    p = argparse.ArgumentParser(description="poems a model writes for val titles, measured beside the real ones")
    p.add_argument("--run", default="pretrained/poetry", help="the run or shipped model to sample")
    p.add_argument("--num_samples", type=int, default=10, help="poems in all (use 200)")
    p.add_argument("--per_title", type=int, default=4, help="samples per val title (a batch)")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    measure_poems(p.parse_args())


if __name__ == "__main__":
    main()
