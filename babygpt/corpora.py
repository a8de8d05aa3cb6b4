"""
The chinese-poetry corpus (npm package chinese-poetry@2.0.1, MIT) read as a list of clean poems: the pinned
tarball (or a folder of its JSON files), its collections, the cleaning steps, OpenCC's t2s, the removal of
near-duplicates and of held-out poets. data/poetry/prepare.py is its command line and writes the dataset:

    python data/poetry/prepare.py --include=tang,ci,song --hold_out=苏轼
    python -m pytest tests/test_poetry_prepare.py

Importing it runs nothing. read_poems() returns Poem records (collection, title, author, body on one row) in the
dataset's order; every poem dropped is counted in a Counter by the step that dropped it.
"""

import base64
import collections
import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile

from babygpt import charlevel
from babygpt import poetry  # what a Han character and a mark are: shared with sampling and the measurements
from babygpt.errors import UserError

PACKAGE = "chinese-poetry@2.0.1"
TARBALL = "chinese-poetry-2.0.1.tgz"
# npm's dist.integrity for the package: sha512 of the tarball, base64
SHA512 = "KtYARvV7CWNtax0na9+Jn6PlhGgSoid7PWyDzXI4KsCEm2odZcqEQyval5koaLygZnM/EQ3lfJ//25K8p3uHNg=="
GET_IT = (f"with npm on PATH prepare.py fetches it itself (npm pack {PACKAGE}), or pass --input=DIR with the "
          "dataset's JSON files (a clone of its repository)")

Collection = collections.namedtuple("Collection", "name files example title loose")
Collection.__doc__ = """One --include name: its Chinese name, the regex its JSON files' names match (found by name:
the npm package and the repository name folders differently), an example for messages, the record key that
holds the title, and loose: the text was edited as prose (quotes, colons, lines without a closing mark) and is
normalised before cleaning (loosen)."""
COLLECTIONS = {
    "tang": Collection("全唐诗", r"poet\.tang\.\d+\.json", "poet.tang.N.json", "title", False),
    "ci": Collection("宋词", r"ci\.song\.\d+y?\.json", "ci.song.N.json", "rhythmic", False),  # 2019y: added in 2019
    "song": Collection("宋诗", r"poet\.song\.\d+\.json", "poet.song.N.json", "title", False),
    "yuanqu": Collection("元曲", r"yuanqu\.json", "yuanqu.json", "title", True),
    "shijing": Collection("诗经", r"shijing\.json", "shijing.json", "title", True),
    "chuci": Collection("楚辞", r"chuci\.json", "chuci.json", "title", True),
    "sishu": Collection("四书", r"(lunyu|daxue|zhongyong|mengzi)\.json", "lunyu.json", "chapter", True),
    # the 蒙学 readers in verse or paired lines; not guwenguanzhi (prose essays), wenzimengqiu (a script
    # primer), sanzijing-new (a second edition of sanzijing-traditional)
    "mengxue": Collection("蒙学", r"(sanzijing-traditional|qianziwen|baijiaxing|dizigui|qianjiashi|tangshisanbaishou"
                                 r"|shenglvqimeng|zengguangxianwen|zhuzijiaxun|youxueqionglin)\.json",
                          "qianziwen.json", "title", True),
    "wudai": Collection("五代词", r"huajianji-(\d+|x)-juan\.json|poetrys\.json", "huajianji-N-juan.json",
                        "rhythmic", True),
    "caocao": Collection("曹操诗集", r"caocao\.json", "caocao.json", "title", True),
    "nalan": Collection("纳兰性德诗集", r"纳兰性德诗集\.json", "纳兰性德诗集.json", "title", True),
}
CI_LIKE = {"ci", "wudai"}  # titled by their 词牌: their shapes make meta.pkl's 词牌 patterns
# folders holding files of the same names that are not poems to keep: error/ repeats the poems flagged as
# doubtful (they are in the main files too), strains/ holds each poem's tones. yudingquantangshi/ (御定全唐诗,
# a second edition of 全唐诗) names its files N.json and matches no collection: it is never read.
SKIPPED_FOLDERS = {"error", "strains"}
TEXT_KEYS = ("paragraphs", "content", "para")  # where a record of each collection keeps its lines

NOTES = [re.compile(p) for p in (r"（[^（）]*）", r"\([^()]*\)", r"【[^【】]*】", r"〖[^〖〗]*〗")]  # innermost first
PLACEHOLDERS = set("□■○●◇◆△▲〇{}\ufffd") | {chr(c) for c in range(0x2FF0, 0x3000)}  # + ⿰-⿻: described glyphs
QUOTES = "“”‘’「」『』《》〈〉\"'"
LOOSE_MARKS = str.maketrans({"：": "，", ":": "，", ",": "，", ";": "；", "?": "？", "!": "！", **dict.fromkeys(QUOTES, "")})

Poem = collections.namedtuple("Poem", "collection title author body")


# -----------------------------------------------------------------------------
# the source: the npm tarball, or a folder of the same JSON files

def record(title, body):
    """One poem as the model reads it: the title row, the poem's rows, a blank row."""
    return f"{title}\n{poetry.layout(body)}\n\n"


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
    """The collection a file belongs to by its name ('tang', 'ci', ...), or None to skip it."""
    folders = set(path.replace("\\", "/").split("/")[:-1])
    if folders & SKIPPED_FOLDERS:
        return None
    name = os.path.basename(path)
    return next((c for c in include if re.fullmatch(COLLECTIONS[c].files, name)), None)


def text_of(record):
    """A record's lines: the first of TEXT_KEYS that holds a list of strings, else None."""
    for key in TEXT_KEYS:
        lines = record.get(key)
        if isinstance(lines, list) and lines and all(isinstance(s, str) for s in lines):
            return lines
    return None


def nested_records(node):
    """Every record inside a file of the readers (蒙学, 四书): the dicts that hold lines (text_of), however
    deep their book nests them (book -> volume -> chapter)."""
    if isinstance(node, list):
        for item in node:
            yield from nested_records(item)
    elif isinstance(node, dict):
        if text_of(node) is not None:
            yield node
            return
        for key in TEXT_KEYS:
            if isinstance(node.get(key), (list, dict)):
                yield from nested_records(node[key])


def read_json(name, data, loose=False):
    """A file's records: the poems of a list (the big collections), or those nested_records finds (loose)."""
    try:
        records = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{name} is not valid JSON ({e}); fetch the dataset again") from None
    if loose and isinstance(records, (list, dict)):
        return list(nested_records(records))
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise UserError(f"{name} is not a list of poems; is it a chinese-poetry file?")
    return records


def source_files(source, include):
    """Yield (collection, file name, records) for each poem file in a tarball or under a folder."""
    if os.path.isfile(source):
        try:
            with tarfile.open(source, "r:*") as tar:
                for member in tar:  # in stream order: a .tgz is read once, front to back
                    c = member.isfile() and collection_of(member.name, include)
                    if c:
                        yield c, member.name, read_json(member.name, tar.extractfile(member).read(),
                                                        COLLECTIONS[c].loose)
        except (tarfile.TarError, EOFError, OSError) as e:
            reason = (str(e).splitlines() or [type(e).__name__])[0].rstrip(":")
            raise UserError(f"{source} is not a readable tarball ({reason}); delete it and run "
                            "again, or pass --input=DIR") from None
        return
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = os.path.join(root, name)
            c = collection_of(os.path.relpath(path, source), include)
            if c:
                with open(path, "rb") as f:
                    yield c, path, read_json(path, f.read(), COLLECTIONS[c].loose)


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


def loosen(paragraphs):
    """The lines of a collection edited as prose (楚辞, 四书, 蒙学, ...) in the marks the poems use: quotes and
    《》 go (their words stay), a colon becomes ，, ASCII marks full-width, the spaces between a reader's
    phrases (弟子规: 弟子規 聖人訓 ...) ，, and a line with no closing mark (千字文: 天地玄黃) ends on 。."""
    out = []
    for p in paragraphs:
        p = re.sub(r"\s+", "，", p.translate(LOOSE_MARKS).strip())
        if p and p[-1] not in poetry.PUNCT:
            p += "。"
        out.append(p)
    return out


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


def han_only(text):
    """A title's or an author's Chinese characters (and ·), nothing else."""
    return "".join(c for c in text if poetry.is_han(c) or c == "·").strip("·")


def clean_poem(record, collection, removed):
    """A JSON record -> (title, author, body on one row) in the original script, or None when a step drops it
    (counted in removed). A 词's title is its 词牌 (the dataset gives 词 no other title)."""
    spec = COLLECTIONS[collection]
    paragraphs = (text_of(record) or []) if spec.loose else record.get("paragraphs")
    if not isinstance(paragraphs, list) or not all(isinstance(p, str) for p in paragraphs):
        paragraphs = []
    if spec.loose:
        paragraphs = loosen(paragraphs)
    title = record.get(spec.title) or (spec.loose and (record.get("title") or record.get("chapter")))
    title = str(title or "")
    body = remove_notes("\n".join(paragraphs), removed)
    title = remove_notes(title, removed).replace("・", "·")
    body = re.sub(r"\s+", "", body)  # rows are laid out again below; spaces are not text
    # a note between two marks leaves them side by side ('…流。（注）。'): the line had one
    body = re.sub(f"([{poetry.PUNCT}])[{poetry.PUNCT}]+", r"\1", body).lstrip(poetry.PUNCT)
    reason = why_dropped(title, body)
    if reason:
        removed[reason] += 1
        return None
    title = han_only(title)
    if not title:
        removed["untitled"] += 1  # kept, titled 無題 (无题 after t2s)
    author = han_only(re.sub(r"（[^（）]*）|\([^()]*\)", "", str(record.get("author") or "")))  # （唐）孟浩然
    return title or "無題", author, body


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


# -----------------------------------------------------------------------------
# reading: files in order, cleaned and converted; then near-duplicates and held-out poets go

class NearDuplicates:
    """The poems seen so far, to find a near-duplicate of a new one: the same poem punctuated two ways, kept
    under two poets, or with a variant character or two. Two bodies are near-duplicates when, their marks
    removed, they have the same number of characters, share their first two lines or their last two lines,
    and differ in at most one character in ten, position by position (a refrain, 没了期，没了期，..., shares its
    opening with another poem but differs in more)."""

    def __init__(self):
        self.buckets = collections.defaultdict(list)  # (opening or closing, length) -> texts without marks

    @staticmethod
    def keys(body):
        lines = poetry.poem_lines(body)
        n = sum(map(len, lines))
        return [("<", "".join(lines[:2]), n), (">", "".join(lines[-2:]), n)]

    def find(self, body):
        """Whether an earlier body is a near-duplicate of this one."""
        text = re.sub(f"[{poetry.PUNCT}]", "", body)
        allowed = len(text) // 10
        return any(sum(a != b for a, b in zip(text, other)) <= allowed
                   for key in self.keys(body) for other in self.buckets.get(key, ()))

    def add(self, body):
        text = re.sub(f"[{poetry.PUNCT}]", "", body)
        for key in self.keys(body):
            self.buckets[key].append(text)


def read_files(source, include, script, read, removed):
    """Every poem that survives cleaning, as Poems in the dataset's order (by collection in include's order,
    then file number), converted, duplicates included."""
    files = sorted(source_files(source, include),
                   key=lambda f: (include.index(f[0]), charlevel.natural_key(os.path.basename(f[1]))))
    missing = [c for c in include if not any(f[0] == c for f in files)]
    if missing:
        names = ", ".join(COLLECTIONS[c].example for c in missing)
        raise UserError(f"{source} has no {names} files (searched recursively); give --input the "
                        "dataset's folder (a clone of its repository) or the npm package's tarball")
    convert, poems = converter(script), []
    for collection, _, records in files:
        read[collection] += len(records)
        for record in records:
            cleaned = clean_poem(record, collection, removed)
            if cleaned is not None:
                title, author, body = convert("\n".join(cleaned)).split("\n")
                poems.append(Poem(collection, title, author, body))
    return poems


def check_hold_out(hold_out, poems):
    """Each held-out poet must have a poem, else a one-line UserError naming the nearest authors."""
    authors = collections.Counter(p.author for p in poems)
    for name in hold_out:
        if not authors[name]:
            near = difflib.get_close_matches(name, list(authors), n=3, cutoff=0.5)
            hint = f"; nearest: {', '.join(near)}" if near else ""
            raise UserError(f"--hold_out={name}: no poem of the included collections has that author{hint}; "
                            "give the poet's name as the corpus writes it (simplified unless --script=traditional)")


def read_poems(source, include, script, read, removed, hold_out=()):
    """Every kept poem as a Poem, in the dataset's order, converted, each text once (NearDuplicates: the
    first poem of a text stays, later ones are counted in removed['duplicates']), without the held-out poets'
    poems (removed['held_out']) nor any copy of them under another name (removed['held_out_copies'])."""
    poems = read_files(source, include, script, read, removed)
    check_hold_out(hold_out, poems)
    held, seen, kept = NearDuplicates(), NearDuplicates(), []
    for p in poems:
        if p.author in hold_out:
            held.add(p.body)
    for p in poems:
        if p.author in hold_out:
            removed["held_out"] += 1
        elif held.find(p.body):
            removed["held_out_copies"] += 1
        elif seen.find(p.body):
            removed["duplicates"] += 1
        else:
            seen.add(p.body)
            kept.append(p)
    return kept
