"""
Poems in exact form: what a line of a poem is, the rhyme classes, a decode-time constraint that
masks the logits so that every sample is a 五绝/七绝/五律/七律 or follows a 词牌's pattern (with 藏头 acrostics
and rhyme), and the measurements of a list of poems (form rate, rhyme rate, repeats, novelty).
Importing it runs nothing; sample.py and bench.py call it, data/poetry/prepare.py shares its text rules.

    python sample.py --out_dir=out-poetry --form=七绝 --acrostic=春夏秋冬 --rhyme=True
    python -m pytest tests/test_poetry_forms.py

The text layout (data/poetry/readme.md): a record is a title row, the poem's rows, then a blank row. A row
of the poem ends after every sentence end (。？！), so a 绝句 or 律诗 is one couplet per row:
    静夜思
    床前明月光，疑是地上霜。
    举头望明月，低头思故乡。
    (blank row)
A line (句) is the run of characters closed by ，。？！ or ；. A 词's title row is its 词牌, and the pause mark
、 (the 逗 inside a 词's line) does not close a line.
"""

import difflib
import functools
import re

import torch

import copycheck
from runtime import UserError

LINE_END = "，。？！；"    # close a line (句); the corpus uses ； between clauses as it uses ，
SENTENCE_END = "。？！"    # close a row of text too: the layout puts a newline after each
PAUSE = "、"              # a pause inside a 词's line (念、...): a mark of the pattern, not a line end
PUNCT = LINE_END + PAUSE
TITLE_MAX = 20            # a title the model writes stops here: 97 % of the 全唐诗's titles are shorter

# the regular forms as patterns: each line's length and closing mark (odd lines ，, even lines 。, as most
# of the corpus' regular poems are punctuated), then a newline after every 。
FORMS = {"五绝": "5，5。" * 2, "七绝": "7，7。" * 2, "五律": "5，5。" * 4, "七律": "7，7。" * 4}
ALIASES = {"wujue": "五绝", "qijue": "七绝", "wulv": "五律", "qilv": "七律"}


# -----------------------------------------------------------------------------
# the text of a poem: characters, lines, shapes, forms

def is_han(ch):
    """A Chinese character (CJK unified ideographs, extensions A to G, compatibility ideographs)."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x3134F
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def split_title(text):
    """'静夜思\\n床前明月光，...' -> ('静夜思', '床前明月光，...'). The first row is a title when it has no
    line-ending mark; otherwise the text is all poem and the title ''."""
    rows = text.strip("\n").split("\n")
    if len(rows) > 1 and not any(c in LINE_END for c in rows[0]):
        return rows[0], "\n".join(rows[1:])
    return "", "\n".join(rows)


def poem_lines(body):
    """The lines (句) of a poem's body without their marks: '白日依山尽，黄河入海流。' -> ['白日依山尽',
    '黄河入海流']. Newlines are layout; a run left open at the end (a poem cut off) is a line too."""
    runs = re.split(f"[{LINE_END}]", body.replace("\n", ""))
    return runs[:-1] if runs[-1] == "" else runs


def form_of(body):
    """'五绝', '七绝', '五律' or '七律' for a regular poem: 4 or 8 lines, all of 5 or all of 7 Han
    characters; None for any other poem."""
    lines = poem_lines(body)
    n = len(lines[0]) if lines else 0
    if len(lines) not in (4, 8) or n not in (5, 7):
        return None
    if any(len(line) != n or not all(map(is_han, line)) for line in lines):
        return None
    return ("五" if n == 5 else "七") + ("绝" if len(lines) == 4 else "律")


def shape(body):
    """A body's pattern: each segment's length and closing mark, '5，5。5，5。' for a 五绝. A 词牌's
    pattern (meta.pkl's ci_forms) is the shape most of its poems share."""
    runs = re.findall(f"([^{PUNCT}]*)([{PUNCT}])", body.replace("\n", ""))
    return "".join(f"{len(run)}{mark}" for run, mark in runs)


def parse_pattern(pattern):
    """'5，5。' -> [(5, '，'), (5, '。')]."""
    return [(int(n), mark) for n, mark in re.findall(r"(\d+)(\D)", pattern)]


def pattern_lines(pattern):
    """How many lines (句) a pattern has: its segments closed by a line end (、 closes none)."""
    return sum(mark in LINE_END for _, mark in parse_pattern(pattern))


def layout(flat):
    """A poem's text on one row -> its rows: a newline after every sentence end but the last."""
    return re.sub(f"([{SENTENCE_END}])(?!$)", "\\1\n", flat)


# -----------------------------------------------------------------------------
# rhyme: one definition, used by the --rhyme mask and by the measurements

# finals that rhyme in modern verse though their vowels differ: 中华新韵's 痕 (en in un ün) and 庚 (eng ing ong
# iong) groups, and o with e (十三辙's 梭波). With them 0.90 of the real 唐诗's even lines rhyme, 0.80 without.
RHYME_MERGES = {"in": "en", "vn": "en", "ing": "eng", "ong": "eng", "o": "e"}


@functools.lru_cache(maxsize=None)
def rhyme_class(ch):
    """The rhyme class of a character: its pinyin final (pypinyin, the character's most common reading,
    no tone) with the medial i, u or ü dropped, then RHYME_MERGES. 流 liú: iou -> ou, 楼 lóu: ou, so they
    rhyme; 光 guāng: uang -> ang, 乡 xiāng: iang -> ang; 林 lín: in -> en, 云 yún: ün -> en. None for a
    character with no reading (punctuation, letters). Modern readings, not the 平水韵 of the Tang poets:
    on the real 唐诗 about one even line in ten misses (data/poetry/readme.md)."""
    finals = _pypinyin().lazy_pinyin(ch, style=_pypinyin().Style.FINALS, strict=True, errors="ignore")
    if len(finals) != 1 or not finals[0]:
        return None
    final = finals[0]
    if len(final) > 1 and final[0] in "iuv" and final not in ("in", "ing", "vn"):
        final = final[1:]  # pypinyin writes ü as v: 'van' (元) -> 'an', 've' (月) -> 'e'
    return RHYME_MERGES.get(final, final)


def _pypinyin():
    try:
        import pypinyin  # imported here: only rhyme needs it, and it loads a large dictionary
    except ImportError:
        raise UserError("rhyme needs the pypinyin package: pip install -r requirements.txt") from None
    return pypinyin


def rhyme_hits(body):
    """(even lines on the poem's rhyme, even lines) for one poem. The poem's rhyme is the class most of
    its even lines end on (ties: the first even line's); an ending with no class never counts."""
    ends = [line[-1] if line else "" for line in poem_lines(body)[1::2]]
    classes = [rhyme_class(ch) if ch else None for ch in ends]
    known = [c for c in classes if c is not None]
    if not known:
        return 0, len(classes)
    rhyme = max(dict.fromkeys(known), key=known.count)  # dict.fromkeys keeps first-seen order for ties
    return sum(c == rhyme for c in classes), len(classes)


# -----------------------------------------------------------------------------
# the constraint: at each step, only what the form allows may be sampled

HAN, RHYME, PAD = -1, -2, -3  # template slots: any Han character, one on the row's rhyme, past the end;
                              # a slot >= 0 is that token id, fixed (a mark, a newline, an acrostic character)


def compile_pattern(pattern, stoi, acrostic="", rhyme=False):
    """The token slots of a poem body in pattern, its closing blank row included: '5，5。' ->
    [HAN x5, ，, HAN x4, RHYME or HAN, 。, \\n, \\n]. acrostic[i] is fixed at the start of line i; the
    rhyme slots are the last characters of the lines closed by a sentence end (a regular poem's even lines)."""
    slots, line, line_start = [], 0, True
    for n, mark in parse_pattern(pattern):
        for j in range(n):
            if j == 0 and line_start and acrostic:
                slots.append(stoi[acrostic[line]])  # it wins over rhyme in a 1-character line
            elif rhyme and j == n - 1 and mark in SENTENCE_END:
                slots.append(RHYME)
            else:
                slots.append(HAN)
        slots.append(stoi[mark])
        line_start = mark in LINE_END
        line += line_start
        if mark in SENTENCE_END:
            slots.append(stoi["\n"])
    return slots + [stoi["\n"]]  # the blank row that ends the poem


class PoemConstraint:
    """One state per sample row. mask(logits) leaves only the tokens the row's form allows (the others get
    -inf); advance(idx_next) moves each row on by the token it took; done (B,) says which rows have ended
    their poem (they are then held on newlines). GPT.generate_tokens calls these and stops when all are done.

    A row may follow several templates at once (no --form: 五 or 七 characters, 4 or 8 lines); it keeps those
    its tokens fit, so the model itself picks the line length and where the poem ends. A row that starts in its
    title writes Han characters up to a newline first (or the forced title: a 词牌's name)."""

    def __init__(self, templates, han, rhyme_of, newline, starts):
        L = max(map(len, templates)) + 1
        self.slots = torch.full((len(templates), L), PAD, dtype=torch.long)  # (K, L)
        for k, t in enumerate(templates):
            self.slots[k, :len(t)] = torch.tensor(t)
        self.length = torch.tensor([len(t) for t in templates])  # (K,)
        self.han, self.rhyme_of, self.newline = han, rhyme_of, newline  # (V,) bool, (V,) long, int
        B = len(starts)
        self.titling = torch.tensor([s[0] for s in starts])  # (B,) still writing the title
        self.title_len = [s[1] for s in starts]
        self.forced = [list(s[2]) for s in starts]  # title tokens still to come (a 词牌's name)
        self.pos = torch.zeros(B, dtype=torch.long)  # (B,) slot of the next token in the templates
        self.alive = torch.ones(B, len(templates), dtype=torch.bool)  # (B, K) templates the row still fits
        self.rhyme = torch.full((B,), -1, dtype=torch.long)  # (B,) rhyme class, fixed by the first rhyme slot
        self.done = torch.zeros(B, dtype=torch.bool)  # (B,)
        self.max_new_tokens = TITLE_MAX + 1 + int(self.length.max())  # enough for the longest poem

    def _to(self, device):
        for name in ("slots", "length", "han", "rhyme_of", "titling", "pos", "alive", "rhyme", "done"):
            setattr(self, name, getattr(self, name).to(device))

    def _codes(self):
        return self.slots[:, self.pos.clamp(max=self.slots.size(1) - 1)].T  # (B, K) each template's slot now

    def _rhyme_ok(self, tokens):
        """(B, ...) whether tokens (B, ...) may end a rhyme slot of each row: on the row's rhyme, or on
        any rhyme while the row has none yet."""
        cls = self.rhyme_of[tokens]
        fixed = self.rhyme.view(-1, *[1] * (tokens.dim() - 1))
        return self.han[tokens] & torch.where(fixed >= 0, cls == fixed, cls >= 0)

    def _body_allowed(self):
        """(B, V): the tokens some template the row still fits allows at its position."""
        V = self.han.numel()
        ids = torch.arange(V, device=self.han.device)
        codes = self._codes()[..., None]  # (B, K, 1)
        rhyme_ok = self._rhyme_ok(ids.expand(len(self.pos), V))[:, None, :]  # (B, 1, V)
        allowed = (codes == ids) | ((codes == HAN) & self.han) | ((codes == RHYME) & rhyme_ok)  # (B, K, V)
        return (allowed & self.alive[..., None]).any(dim=1)  # (B, V)

    def _title_allowed(self, b, V):
        """Row b's title: its forced tokens (a 词牌's name and the newline), else Han characters (up to
        TITLE_MAX) or, after at least one, the newline."""
        allowed = torch.zeros(V, dtype=torch.bool, device=self.han.device)
        if self.forced[b]:
            allowed[self.forced[b][0]] = True
            return allowed
        if self.title_len[b] < TITLE_MAX:
            allowed |= self.han
        allowed[self.newline] = self.title_len[b] > 0
        return allowed

    def mask(self, logits):
        """logits (B, V) -> the same with every token the forms forbid at -inf."""
        if self.han.device != logits.device:
            self._to(logits.device)
        allowed = self._body_allowed()  # (B, V)
        for b in self.titling.nonzero()[:, 0].tolist():
            allowed[b] = self._title_allowed(b, logits.size(-1))
        allowed[self.done] = False
        allowed[self.done, self.newline] = True  # a finished row waits on newlines, cut off when printed
        return logits.masked_fill(~allowed, float("-inf"))

    def advance(self, idx_next):
        """Move each row on by the token it took, idx_next (B, 1)."""
        tok = idx_next[:, 0].to(self.pos.device)  # (B,)
        body = ~self.titling & ~self.done  # rows inside the poem at this step
        for b in self.titling.nonzero()[:, 0].tolist():
            self.forced[b] = self.forced[b][1:]
            if tok[b] == self.newline:  # titles are Han characters: a newline ends one
                self.titling[b] = False
            else:
                self.title_len[b] += 1
        codes = self._codes()  # (B, K)
        fits = (codes == tok[:, None]) | ((codes == HAN) & self.han[tok][:, None]) \
            | ((codes == RHYME) & self._rhyme_ok(tok)[:, None])
        alive = self.alive & fits
        first_rhyme = body & (self.rhyme < 0) & ((codes == RHYME) & alive).any(dim=1)
        self.rhyme = torch.where(first_rhyme, self.rhyme_of[tok], self.rhyme)
        self.alive = torch.where(body[:, None], alive, self.alive)
        self.pos += body.long()
        self.done |= body & (self.alive & (self.length == self.pos[:, None])).any(dim=1)


def resolve_form(form, ci_forms):
    """'七绝', 'qijue' or a 词牌 of the data -> (name, pattern, is_ci). An unknown one: a UserError that names
    the nearest known ones."""
    name = ALIASES.get(form.lower(), form)
    if name in FORMS:
        return name, FORMS[name], False
    if name in ci_forms:
        return name, ci_forms[name], True
    regular = "五绝, 七绝, 五律, 七律 (wujue, qijue, wulv, qilv)"
    if not ci_forms:
        raise UserError(f"unknown form '{form}'; use {regular}; this model's data has no 词牌 patterns "
                        "(prepare it with python data/poetry/prepare.py --include=tang,ci and train on it)")
    near = difflib.get_close_matches(name, list(ci_forms), n=3, cutoff=0.3)
    hint = f"; nearest 词牌: {', '.join(near)}" if near else f" or one of the data's {len(ci_forms):,} 词牌"
    raise UserError(f"unknown form '{form}'; use {regular}{hint}")


def choose_patterns(meta, form, acrostic):
    """The patterns a poem may take, and the forced title (a 词牌's name) or ''. Without a form: the regular
    forms, those with as many lines as the acrostic has characters when there is one."""
    if form:
        name, pattern, is_ci = resolve_form(form, meta.get("ci_forms") or {})
        if acrostic and len(acrostic) != pattern_lines(pattern):
            raise UserError(f"--acrostic={acrostic} has {len(acrostic)} characters but a {name} has "
                            f"{pattern_lines(pattern)} lines; give one character per line")
        return [pattern], name if is_ci else ""
    patterns = [p for p in FORMS.values() if not acrostic or pattern_lines(p) == len(acrostic)]
    if not patterns:
        raise UserError(f"--acrostic={acrostic} has {len(acrostic)} characters; give 4 (a 绝句) or 8 (a 律诗), "
                        "or pick a form with as many lines with --form")
    return patterns, ""


def check_vocabulary(meta, patterns, acrostic):
    """The model must be able to write the marks, the newline and each acrostic character."""
    if meta is None:
        raise UserError("poem forms need a character-level model with a meta.pkl (this one uses GPT-2 BPE); "
                        "train one on python data/poetry/prepare.py's data")
    stoi = meta["stoi"]
    needed = dict.fromkeys("\n" + "".join(mark for p in patterns for _, mark in parse_pattern(p)))
    missing = [c for c in needed if c not in stoi]
    if missing:
        shown = " ".join(repr(c) for c in missing)
        raise UserError(f"this model's vocabulary has no {shown}, which poem forms need; train on poems "
                        "(python data/poetry/prepare.py)")
    not_han = [c for c in acrostic if not is_han(c)]
    if not_han:
        raise UserError(f"--acrostic={acrostic}: {''.join(not_han)!r} is not a Chinese character; "
                        "give one Chinese character per line")
    unknown = [c for c in dict.fromkeys(acrostic) if c not in stoi]
    if unknown:
        raise UserError(f"--acrostic={acrostic}: the model never saw {''.join(unknown)!r}; "
                        "pick other characters")


def title_start(prompt, stoi, forced_title=""):
    """Where a prompt leaves its row: (still in the title?, title characters so far, forced tokens).
    Only the prompt's last record counts (after its last blank row: earlier poems are context). It may be
    empty (the model writes a title), a title (the model may go on with it) or a title and its newline (the
    poem starts at once); poem lines are the form's to write, so a record with any is refused."""
    record = prompt.rpartition("\n\n")[2].lstrip("\n")
    title, newline, rest = record.partition("\n")
    if rest:
        raise UserError(f"with a poem form the prompt is a title (or nothing), not the start of a poem: "
                        f"drop {rest[:20]!r} after the title {title!r}")
    if newline:
        return False, len(title), []
    forced = forced_title[len(title):] if forced_title.startswith(title) else ""
    return True, len(title), [stoi[c] for c in forced] + ([stoi["\n"]] if forced else [])


def vocab_tables(itos, rhyme):
    """(V,) which ids are Han characters, and (V,) each id's rhyme class index (-1: none, or rhyme off)."""
    chars = [itos[i] for i in range(len(itos))]
    han = torch.tensor([is_han(c) for c in chars])
    if not rhyme:
        return han, torch.full((len(chars),), -1, dtype=torch.long)
    classes = [rhyme_class(c) if h else None for c, h in zip(chars, han.tolist())]
    index = {c: i for i, c in enumerate(dict.fromkeys(c for c in classes if c is not None))}
    return han, torch.tensor([index.get(c, -1) for c in classes])


def constraint_for(meta, form=None, acrostic=None, rhyme=False, prompt="\n", batch_size=1):
    """The PoemConstraint for sample.py's --form, --acrostic and --rhyme, or None when none is set.
    meta: the run's vocabulary (None: GPT-2 BPE); prompt: the prompt as the model gets it, one string for all
    rows or a list with one per row. Every problem is a UserError with one line that says how to fix it."""
    acrostic = acrostic or ""
    if not form and not acrostic and not rhyme:
        return None
    if meta is None:
        check_vocabulary(meta, [], acrostic)
    patterns, forced_title = choose_patterns(meta, form, acrostic)
    check_vocabulary(meta, patterns, acrostic)
    stoi = meta["stoi"]
    prompts = [prompt] * batch_size if isinstance(prompt, str) else list(prompt)
    if len(prompts) != batch_size:
        raise UserError(f"{len(prompts)} prompts for {batch_size} samples; give one prompt, or one per sample")
    if forced_title and any(c not in stoi for c in forced_title):
        forced_title = ""  # a name the vocabulary cannot spell: the model writes its own title
    starts = [title_start(p, stoi, forced_title) for p in prompts]
    han, rhyme_of = vocab_tables(meta["itos"], rhyme)
    templates = [compile_pattern(p, stoi, acrostic, rhyme) for p in patterns]
    return PoemConstraint(templates, han, rhyme_of, stoi["\n"], starts)


def cut_poem(text, start=0):
    """A generated row cut where its poem ends (the blank row after it, and the newlines a finished row
    waits on, go): text is prompt + generation, start the prompt's length. A row that never ended is whole."""
    end = text.find("\n\n", start)
    return text if end < 0 else text[:end]


# -----------------------------------------------------------------------------
# measurements of a list of poems (bench.py --what=poems): samples side by side with the real val poems.
# A poem is a text with its title row first or not (cut_poem cuts a sample so).

def bodies(poems):
    return [split_title(p)[1] for p in poems]


def form_rate(poems):
    """The share of poems that are a regular 绝句 or 律诗 (form_of: 4 or 8 lines, all of 5 or all of 7)."""
    return sum(form_of(b) is not None for b in bodies(poems)) / max(len(poems), 1)


def rhyme_rate(poems):
    """The share of even-line endings on their poem's rhyme (rhyme_hits), over the regular poems only;
    None when no poem is regular."""
    hits = [rhyme_hits(b) for b in bodies(poems) if form_of(b)]
    total = sum(n for _, n in hits)
    return sum(h for h, _ in hits) / total if total else None


def repeat_rate(poems):
    """The share of lines in which some character occurs twice or more (a small model's stutter, 风风风风风;
    the real poems' doubled words, 处处, set the baseline)."""
    lines = [line for b in bodies(poems) for line in poem_lines(b) if line]
    return sum(len(set(line)) < len(line) for line in lines) / max(len(lines), 1)


def novelty(poems, corpus, stoi):
    """Against the training text (corpus: train.bin's ids, e.g. a memmap; stoi: its vocabulary): the share of
    lines found verbatim in it, and the longest passage of a poem's body found there, with its text. Both come
    from the copy report's exact search (copycheck.copy_stats); a line counts as copied when its longest
    passage in the corpus is the whole line."""
    def encode(text):  # a character outside the vocabulary gets an id no training token has
        return [stoi.get(c, len(stoi)) for c in text]

    lines = [line for b in bodies(poems) for line in poem_lines(b) if line]
    copies = copycheck.copy_stats(corpus, [encode(line) for line in lines])
    copied = sum(c.length == len(line) for c, line in zip(copies, lines))
    texts = bodies(poems)
    passages = copycheck.copy_stats(corpus, [encode(t) for t in texts])
    i = max(range(len(texts)), key=lambda k: passages[k].length, default=None)
    longest = passages[i] if i is not None else None
    text = texts[i][longest.sample_pos:longest.sample_pos + longest.length] if longest and longest.length else ""
    return {"copied_lines": copied / max(len(lines), 1), "longest_copy": longest.length if longest else 0,
            "longest_copy_text": text}


def measure(poems, corpus=None, stoi=None):
    """All of bench.py's figures for a list of poems: form_rate, rhyme_rate, repeat_rate and, given the
    training text (corpus, stoi), copied_lines, longest_copy and longest_copy_text."""
    figures = {"poems": len(poems), "form_rate": form_rate(poems), "rhyme_rate": rhyme_rate(poems),
               "repeat_rate": repeat_rate(poems)}
    if corpus is not None:
        figures.update(novelty(poems, corpus, stoi))
    return figures
