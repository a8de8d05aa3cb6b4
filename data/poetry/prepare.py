"""
Prepare the poetry corpus: 唐诗, and on request 宋词, 宋诗 and the other collections -> meta.pkl, train.bin, val.bin.

    python data/poetry/prepare.py                          # 全唐诗 (57,607 poems), simplified characters
    python data/poetry/prepare.py --include=tang,ci        # and the 宋词, with their 词牌 patterns in meta.pkl
    python data/poetry/prepare.py --include=tang,ci,song,yuanqu,shijing,chuci,sishu,mengxue,wudai,caocao,nalan \
        --hold_out=苏轼 --out_dir=data/poetry-all --input=data/poetry/chinese-poetry-2.0.1.tgz  # all, 苏轼 held out
    python data/poetry/prepare.py --input=chinese-poetry/  # a clone of the dataset's repository (or a .tgz)
    python data/poetry/prepare.py --help

The source is the chinese-poetry dataset (MIT) as the npm package chinese-poetry@2.0.1. Its tarball is kept in
OUT_DIR (ignored by git), checked against its sha512, and the JSON files are read straight out of it; when it
is missing and npm is on PATH, `npm pack` fetches it first. babygpt/corpora.py reads it: the poems are cleaned
(each step counted), converted to simplified characters (OpenCC t2s), near-duplicates and held-out poets go.
This script writes them one record per poem: a title row, the poem's rows (a newline after every 。？！, so a
绝句 is one couplet per row), a blank row. A 词's title row is its 词牌. A fixed 5 % of the poems, picked by a
keyed hash of each poem's text, is val. meta.pkl keeps the 词牌 patterns and the corpus' title cap (title_max).
See readme.md for the numbers.
"""

import collections
import hashlib
import os

from babygpt import charlevel  # the shared character-level code, at the repository's top (make setup installs the repo)
from babygpt import poetry  # what a line, a form and a 词牌 pattern are: shared with sampling and the measurements
from babygpt.corpora import COLLECTIONS, CI_LIKE, TARBALL, check_tarball, read_poems, record, resolve_source  # noqa: F401
from babygpt.errors import UserError, run_main

HERE = os.path.dirname(os.path.abspath(__file__))
VAL_KEY = b"babygpt poetry val"  # the key of the split's hash: change it and the split changes
TITLE_SHARE = 0.9  # meta.pkl's title_max: the title length this share of the corpus' titles keep to (issue 33)


# -----------------------------------------------------------------------------
# the dataset: 词牌 patterns, the split by poem, the records

def ci_forms(poems, min_poems=2):
    """{词牌: pattern} for each 词牌 whose most common shape (poetry.shape) at least min_poems of its poems
    share. 失调名 ("tune lost") names no form; a shape must end a sentence, as the form's last row does."""
    shapes = collections.defaultdict(collections.Counter)
    for p in poems:
        if p.collection in CI_LIKE and p.title != "失调名":
            shapes[p.title][poetry.shape(p.body)] += 1
    forms = {}
    for name, counts in sorted(shapes.items()):
        pattern, n = counts.most_common(1)[0]
        if n >= min_poems and pattern[-1] in poetry.SENTENCE_END:
            forms[name] = pattern
    return forms


def title_max(titles, share=TITLE_SHARE):
    """The length share of the titles keep to (the 90th percentile by default): sampling caps a title the
    model writes there (meta.pkl's title_max; poetry.TITLE_MAX when a meta.pkl has none)."""
    lengths = sorted(map(len, titles))
    return lengths[min(int(share * len(lengths)), len(lengths) - 1)] if lengths else poetry.TITLE_MAX


def in_val(body, val_fraction):
    """A poem's side, from a keyed hash of its text: the same poem is in val whatever else is included."""
    h = hashlib.blake2b(body.encode("utf-8"), key=VAL_KEY, digest_size=8).digest()
    return int.from_bytes(h, "big") < val_fraction * 2 ** 64


def count_forms(poems):
    forms = collections.Counter(poetry.form_of(p.body) or "other" for p in poems)
    return {name: forms[name] for name in ("五绝", "七绝", "五律", "七律", "other")}


STEPS = {"notes": "editorial notes in brackets removed (poems kept)",
         "empty": "empty poems dropped", "placeholder": "poems with a placeholder (□, a described glyph) dropped",
         "private_use": "poems with private-use characters dropped",
         "junk": "poems with other non-Han text (quotes, 《》, digits, leftover prose) dropped",
         "broken": "poems with a line left open or empty dropped",
         "duplicates": "near-duplicates dropped (the same characters but for one in ten, a later copy of a poem)",
         "held_out": "poems of the held-out poets (--hold_out) left out of train and val",
         "held_out_copies": "near-duplicates of those under other names left out too",
         "untitled": "titles left empty, written as 无题"}


def report(read, removed, poems, include, log):
    """The report's lines (for people) and its numbers (returned): poems read and kept per collection and
    per form, and what each cleaning step removed."""
    kept = collections.Counter(p.collection for p in poems)
    for c in include:
        log(f"{COLLECTIONS[c].name} ({c}): {read[c]:,} poems read, {kept[c]:,} kept")
    for key, what in STEPS.items():
        if removed[key] or not key.startswith("held_out"):
            log(f"  {removed[key]:,} {what}")
    forms = count_forms(poems)
    log("forms: " + ", ".join(f"{name} {n:,} ({n / max(len(poems), 1):.1%})" for name, n in forms.items()))
    return {"poems_read": {c: read[c] for c in include}, "poems": {c: kept[c] for c in include},
            "forms": forms, "removed": {key: removed[key] for key in STEPS}}


def parse_include(text):
    """'tang,ci' -> ['tang', 'ci'], in the order given; an unknown name is an error."""
    include = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [c for c in include if c not in COLLECTIONS]
    if unknown or not include:
        known = ", ".join(f"{c} ({spec.name})" for c, spec in COLLECTIONS.items())
        raise UserError(f"--include={text}: unknown collection {', '.join(unknown) or '(none)'}; "
                        f"use {known}, comma-separated")
    return include


def parse_hold_out(text):
    """'苏轼,黄庭坚' -> ('苏轼', '黄庭坚'); '' -> ()."""
    return tuple(dict.fromkeys(part.strip() for part in (text or "").split(",") if part.strip()))


def prepare_poetry(source, out_dir=HERE, include=("tang",), script="simplified", val_fraction=0.05,
                   block_size=256, log=print, hold_out=()):
    """What prepare.py does once the source (a folder or a tarball) is known; the web page can call it too.
    hold_out: poets whose poems (and any near-duplicate of them) are in neither split. Returns the report's
    numbers: poems per collection and per form, cleaning, characters, vocabulary, split."""
    charlevel.check_options(val_fraction, block_size)
    read, removed = collections.Counter(), collections.Counter()
    poems = read_poems(source, list(include), script, read, removed, tuple(hold_out))
    if not poems:
        raise UserError(f"{source}: no poem is left after cleaning; is it the chinese-poetry dataset?")
    numbers = report(read, removed, poems, list(include), log)
    forms = ci_forms(poems)
    val = [in_val(p.body, val_fraction) for p in poems]
    train_text = "".join(record(p.title, p.body) for p, v in zip(poems, val) if not v)
    val_text = "".join(record(p.title, p.body) for p, v in zip(poems, val) if v)
    cap = title_max(p.title for p in poems)
    log(f"split by poem: {val.count(False):,} train, {val.count(True):,} val; "
        f"{len(forms):,} 词牌 patterns in meta.pkl; titles: 90 % have at most {cap} characters (title_max)")
    extra = {"ci_forms": forms, "title_max": cap, "held_out": list(hold_out)}
    numbers.update(charlevel.prepare_texts(train_text, val_text, out_dir, block_size, extra, log))
    return {**numbers, "train_poems": val.count(False), "val_poems": val.count(True), "ci_forms": len(forms),
            "title_max": cap}


def build_parser():
    p = charlevel.OneLineParser(description="Prepare the poetry corpus: 唐诗 (default), 宋词, 宋诗 and the "
                                "other collections of chinese-poetry.", allow_abbrev=False)
    p.add_argument("--input", metavar="PATH", help="a folder with the dataset's JSON files (poet.tang.N.json, "
                   "ci.song.N.json, ... found recursively: a clone of its repository), or a tarball of the npm "
                   f"package (default: OUT_DIR/{TARBALL}, fetched with npm pack if missing)")
    p.add_argument("--out_dir", metavar="DIR", default=HERE,
                   help=f"folder for the tarball, meta.pkl, train.bin, val.bin (default: {HERE})")
    names = ", ".join(f"{c} ({spec.name})" for c, spec in COLLECTIONS.items())
    p.add_argument("--include", default="tang", help=f"collections, comma-separated: {names} (default: tang)")
    p.add_argument("--hold_out", metavar="POETS", default="",
                   help="poets, comma-separated (e.g. 苏轼): their poems are in neither split, for a fine-tune "
                   "benchmark on text the model never saw (default: none)")
    p.add_argument("--script", choices=["simplified", "traditional"], default="simplified",
                   help="simplified: OpenCC t2s conversion; traditional: the original characters (default: simplified)")
    p.add_argument("--val_fraction", metavar="F", type=float, default=0.05,
                   help="share of the poems kept for validation, whole poems (default: 0.05)")
    p.add_argument("--block_size", metavar="N", type=int, default=256,
                   help="context length you will train with: each split must be longer (default: 256)")
    return p


def main(argv=None):
    def prepare_from_args():
        args = build_parser().parse_args(argv)
        include = parse_include(args.include)  # the options are checked before anything is fetched
        charlevel.check_options(args.val_fraction, args.block_size)
        source = resolve_source(args.input, args.out_dir)
        with charlevel.explained_os_errors():
            prepare_poetry(source, args.out_dir, include, args.script, args.val_fraction, args.block_size,
                           hold_out=parse_hold_out(args.hold_out))
    run_main(prepare_from_args, interrupted=charlevel.INTERRUPTED)


if __name__ == "__main__":
    main()
