"""
Poems in exact form: what a line of a poem is, the rhyme classes, a decode-time constraint that
masks the logits so that every sample is a 五绝/七绝/五律/七律 or follows a 词牌's pattern (with 藏头 acrostics
and rhyme), and the measurements of a list of poems (form rate, rhyme rate, repeats, novelty).
Importing it runs nothing; sample.py and experiments/poems.py call it, data/poetry/prepare.py shares its text rules.

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

import collections
import difflib
import functools
import re

import torch

from babygpt import copycheck
from babygpt import rhymebook
from babygpt.errors import UserError

LINE_END = "，。？！；"    # close a line (句); the corpus uses ； between clauses as it uses ，
SENTENCE_END = "。？！"    # close a row of text too: the layout puts a newline after each
PAUSE = "、"              # a pause inside a 词's line (念、...): a mark of the pattern, not a line end
PUNCT = LINE_END + PAUSE
TITLE_MAX = 11            # a title the model writes stops here when meta.pkl has no title_max: 90 % of the
                          # titles of 全唐诗 + 宋词 have at most 11 characters, half at most 5 (issue 33)

# the regular forms as patterns: each line's length and closing mark (odd lines ，, even lines 。, as most
# of the corpus' regular poems are punctuated), then a newline after every 。
FORMS = {"五绝": "5，5。" * 2, "七绝": "7，7。" * 2, "五律": "5，5。" * 4, "七律": "7，7。" * 4}
COUPLET = "对联"           # --form=对联: the 下联 of the 上联 given as the prompt
ALIASES = {"wujue": "五绝", "qijue": "七绝", "wulv": "五律", "qilv": "七律", "duilian": COUPLET}


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
# 平仄 and rhyme by a rhyme book (rhymebook.py): one rule for regulated verse (近体诗) and one for a 对联, each
# read by the decode-time masks below and by the checker (keeps_rule, keeps_couplet) that tests and bench use

Spec = collections.namedtuple("Spec", "tone rhymed avoid", defaults=("", False, ""))
Spec.__doc__ = """What may stand at one character of a line: tone '' (any), '平' or '仄'; rhymed: in the poem's
one rhyme group, no rhyme character twice; avoid: a character that may not stand there ('' none)."""
FREE = Spec()
PING, ZE = rhymebook.PING, rhymebook.ZE
OPPOSITE = {PING: ZE, ZE: PING}


def line_specs(n, lines, tone=True, rhyme=True):
    """The ways a regular poem (lines lines of n characters) may go: variants, each one list of n Specs per
    line. With tone, 4 variants: 平起 or 仄起 (the first line's 2nd character), first line rhymed (ends 平 on
    the rhyme) or not (ends 仄). In a line the 2nd, 4th and 6th characters alternate; the two lines of a couplet
    are opposed (对) there and a couplet's first line sticks (粘) to the line before; even lines end 平 on the
    rhyme, odd lines after the first on 仄; the 1st, 3rd and 5th are free (一三五不论). The model picks the
    variant: the mask allows the union of those still open. Without tone: one variant, even lines rhymed."""
    if not tone:
        return [[[FREE] * (n - 1) + [Spec(rhymed=rhyme and i % 2 == 1)] for i in range(lines)]]
    variants = []
    for first in (PING, ZE):
        for first_rhymes in (True, False):
            rows = []
            for i in range(1, lines + 1):
                t = first if i % 4 in (0, 1) else OPPOSITE[first]  # lines 2, 3 opposite (对, then 粘), 4, 5 back
                row = [Spec(t if j % 4 == 2 else OPPOSITE[t]) if j % 2 == 0 else FREE for j in range(1, n)]
                rhymed = i % 2 == 0 or (i == 1 and first_rhymes)
                rows.append(row + [Spec(PING, rhyme) if rhymed else Spec(ZE)])
            variants.append(rows)
    return variants


def fits(ch, spec, book):
    """Whether character ch may stand where spec says: a Chinese character, not the one to avoid, able to take
    the tone (a character with two readings takes either; one the book does not know takes none)."""
    return is_han(ch) and ch != spec.avoid and (not spec.tone or spec.tone in book.tones(ch))


def rhymes_together(chars, book, ping_only=True):
    """Whether chars share a rhyme group (a 平 group with ping_only) and none comes twice."""
    if not chars:
        return True
    shared = functools.reduce(frozenset.intersection, (book.groups(c, ping_only) for c in chars))
    return bool(shared) and len(set(chars)) == len(chars)


def keeps_rule(body, book, tone=True, rhyme=True):
    """Whether a poem's body is a regular poem that keeps the rule line_specs states (tone: 平仄; rhyme: one
    rhyme group, no rhyme character twice), in some variant. Not a regular poem: False."""
    if not form_of(body):
        return False
    lines = poem_lines(body)
    for variant in line_specs(len(lines[0]), len(lines), tone, rhyme):
        pairs = [(ch, s) for line, specs in zip(lines, variant) for ch, s in zip(line, specs)]
        if all(fits(ch, s, book) for ch, s in pairs) and \
                rhymes_together([ch for ch, s in pairs if s.rhymed], book, ping_only=tone):
            return True
    return False


def tone_pattern(text, book):
    """The tones the 对联 rule reads in text, one entry per character: at the 2nd, 4th and 6th characters of each
    clause (clauses split by PUNCT) the character's one tone, 平 or 仄; '' elsewhere, for a mark, and where the
    book gives the character two tones (看, 思) or none."""
    pattern, j = [], 0
    for ch in text:
        j = 0 if ch in PUNCT else j + 1
        tones = book.tones(ch) if j in (2, 4, 6) else ()
        pattern.append(next(iter(tones)) if len(tones) == 1 else "")
    return pattern


def couplet_specs(upper, book):
    """What the 下联 of a 上联 may hold, one entry per character of the 上联: its marks as themselves, for a
    character a Spec that avoids the 上联's own character there (同位不同字: so never the 上联 again), opposes its
    tone where tone_pattern reads one (the 2nd, 4th and 6th characters of each clause, a character with one tone),
    and ends on 平."""
    specs = []
    for k, (ch, tone) in enumerate(zip(upper, tone_pattern(upper, book))):
        if ch in PUNCT:
            specs.append(ch)
            continue
        specs.append(Spec(PING if k == len(upper) - 1 else OPPOSITE.get(tone, ""), avoid=ch))
    return specs


def keeps_couplet(upper, lower, book):
    """Whether lower is a 下联 of upper by couplet_specs (the texts without a closing mark)."""
    specs = couplet_specs(upper, book)
    return len(lower) == len(specs) and all(
        fits(ch, s, book) if isinstance(s, Spec) else ch == s for ch, s in zip(lower, specs))


def couplet_prompt(text, meta, book):
    """--start as a 上联 -> (what the model reads: the 上联 and a comma, as a couplet's first line stands in
    the corpus; what is printed: the 上联 on its row). A 上联 that is empty, holds a character that is not
    Chinese or that the model never saw, or cannot end on 仄, is a one-line UserError."""
    upper = text.strip().rstrip(LINE_END)
    if not upper:
        raise UserError("--form=对联 writes the 下联 of a 上联: give the 上联 with --start=, e.g. --start=春回大地千山秀")
    if meta is None:
        check_vocabulary(meta, [], "")
    bad = [c for c in upper if not is_han(c) and c not in PUNCT]
    if bad or re.search(f"(^|[{PUNCT}])[{PUNCT}]", upper):
        raise UserError(f"--start={upper}: a 上联 is Chinese characters in clauses split by ，；、"
                        + (f"; {''.join(bad)!r} is not a Chinese character" if bad else ""))
    unknown = [c for c in dict.fromkeys(upper) if c not in meta["stoi"]]
    if unknown:
        raise UserError(f"--start={upper}: {''.join(unknown)!r} is outside the model's vocabulary; pick other characters")
    tones = book.tones(upper[-1])
    if ZE not in tones:
        why = f"ends on 平 ({upper[-1]})" if tones else f"ends on {upper[-1]}, whose tone the rhyme book does not know"
        raise UserError(f"--start={upper}: the 上联 {why}; a 上联 ends on 仄 and its 下联 on 平: swap the lines "
                        "or end the 上联 on a 仄 character")
    return upper + "，", upper + "\n"


# -----------------------------------------------------------------------------
# the constraint: at each step, only what the form allows may be sampled

def compile_pattern(pattern, stoi, acrostic="", specs=None):
    """The slots of a poem body in pattern, its closing blank row included: a list of (what, rhymed), what a
    Spec or a fixed token id (a mark, a newline, an acrostic character). specs: one list of Specs per segment
    of the pattern (default FREE, no rhyme); acrostic[i] is fixed at the start of line i (no regular form
    constrains a line's first character; in a 词's 1-character line it wins over the rhyme)."""
    segments = parse_pattern(pattern)
    specs = specs or [[FREE] * n for n, _ in segments]
    slots, line, line_start = [], 0, True
    for (n, mark), seg in zip(segments, specs):
        for j in range(n):
            fixed = j == 0 and line_start and acrostic
            slots.append((stoi[acrostic[line]], False) if fixed else (seg[j], seg[j].rhymed))
        slots.append((stoi[mark], False))
        line_start = mark in LINE_END
        line += line_start
        if mark in SENTENCE_END:
            slots.append((stoi["\n"], False))
    return slots + [(stoi["\n"], False)]  # the blank row that ends the poem


def ci_specs(pattern, rhyme):
    """A 词牌's Specs: free, with the last character of each segment closed by a sentence end rhymed."""
    return [[FREE] * (n - 1) + [Spec(rhymed=rhyme and mark in SENTENCE_END)] for n, mark in parse_pattern(pattern)]


class SlotSets:
    """The sets of token ids a slot may take, (S, V) bool, built once per constraint so that a step costs one
    gather: set 0 is empty (past a template's end), set 1 any Han character; add() appends a Spec's or a fixed
    token's. base[s] is the set s backs off to (see PoemConstraint): any Han character for a Spec's set."""

    def __init__(self, itos, book):
        self.chars = [itos[i] for i in range(len(itos))]
        self.book, self.V = book, len(self.chars)
        han = torch.tensor([is_han(c) for c in self.chars])
        self.rows, self.base, self.index = [torch.zeros(self.V, dtype=torch.bool), han], [0, 1], {}
        self.tone_rows = {}

    def _tone(self, tone):
        if tone not in self.tone_rows:  # a 平 or 仄 set is asked for once, not per slot
            self.tone_rows[tone] = torch.tensor([tone in self.book.tones(c) for c in self.chars]) & self.rows[1]
        return self.tone_rows[tone]

    def add(self, what):
        """The set index of a Spec (rhymed is the constraint's business, not the set's) or of a token id."""
        key = what if isinstance(what, int) else what._replace(rhymed=False)
        if key not in self.index:
            if isinstance(key, int):
                row = torch.zeros(self.V, dtype=torch.bool)
                row[key] = True
            else:
                row = self._tone(key.tone) if key.tone else self.rows[1]
                if key.avoid in self.chars:
                    row = row.clone()
                    row[self.chars.index(key.avoid)] = False
            self.index[key] = len(self.rows)
            self.base.append(len(self.rows) if isinstance(key, int) else 1)
            self.rows.append(row)
        return self.index[key]

    def groups(self, ping_only):
        """(V, G) bool: the rhyme groups of each token (ping_only: the 平 groups in which it is 平)."""
        per_char = [self.book.groups(c, ping_only) if is_han(c) else frozenset() for c in self.chars]
        names = {g: i for i, g in enumerate(sorted(set().union(*per_char)))}
        member = torch.zeros(self.V, max(len(names), 1), dtype=torch.bool)
        for v, gs in enumerate(per_char):
            member[v, [names[g] for g in gs]] = True
        return member


def viable_groups(rhymed, member):
    """(K, G): the groups each template (rhymed (K, L): its rhymed slots) may rhyme in, those with a character
    for each of its rhymed slots (a group with fewer would force a back-off at its last rhyme); all of them
    when none has enough. member (V, G): which groups each token is in."""
    need = rhymed.sum(dim=1)  # (K,)
    viable = member.sum(dim=0)[None, :] >= need[:, None]  # (K, G)
    return viable | ~viable.any(dim=1, keepdim=True)


# PoemConstraint's tensors, moved together to the logits' device
CONSTRAINT_TENSORS = ("slots", "rhymed", "length", "sets", "base", "han", "member", "titling", "pos", "alive",
                      "groups", "used", "relaxed", "backoffs", "done")


class PoemConstraint:
    """One state per sample row. mask(logits) leaves only the tokens the row's form allows (the others get
    -inf); advance(idx_next) moves each row on by the token it took; done (B,) says which rows have ended
    their poem (they are then held on newlines). engine.generate_tokens calls these and stops when all are done.

    A row may follow several templates at once (no --form: 五 or 七 characters, 4 or 8 lines; 平起 or 仄起, a
    first line rhymed or not); it keeps those its tokens fit, so the model itself picks the line length, the
    tone pattern and where the poem ends. Each template has its own rhyme state: the groups its rhyme characters
    so far share, and those characters (none may come twice). A row that starts in its title writes Han
    characters up to a newline first (or the forced title: a 词牌's name).

    Back-off: where no token fits any of a row's templates (a vocabulary with no 仄 character, or no rhyme
    group with a character for each rhyme), that one position falls back to its base set: any Han character
    where a Spec stood, the fixed token where one stood. Marks, newlines, acrostic characters and the poem's length never relax; the row's
    templates and rhyme state stay as they were; backoffs (B,) counts the positions relaxed per row."""

    def __init__(self, templates, sets, member, newline, starts, title_max=TITLE_MAX):
        L = max(map(len, templates)) + 1
        self.slots = torch.zeros(len(templates), L, dtype=torch.long)  # (K, L) set index; 0: past the end
        self.rhymed = torch.zeros(len(templates), L, dtype=torch.bool)  # (K, L)
        for k, t in enumerate(templates):
            self.slots[k, :len(t)] = torch.tensor([sets.add(what) for what, _ in t])
            self.rhymed[k, :len(t)] = torch.tensor([r for _, r in t])
        self.length = torch.tensor([len(t) for t in templates])  # (K,)
        self.sets, self.base = torch.stack(sets.rows), torch.tensor(sets.base)  # (S, V), (S,)
        self.han, self.member, self.newline = sets.rows[1], member, newline  # (V,) bool, (V, G) bool, int
        B, K = len(starts), len(templates)
        self.titling = torch.tensor([s[0] for s in starts])  # (B,) still writing the title
        self.title_len = [s[1] for s in starts]
        self.forced = [list(s[2]) for s in starts]  # title tokens still to come (a 词牌's name)
        self.pos = torch.zeros(B, dtype=torch.long)  # (B,) slot of the next token in the templates
        self.alive = torch.ones(B, K, dtype=torch.bool)  # (B, K) templates the row still fits
        self.groups = viable_groups(self.rhymed, member)[None].repeat(B, 1, 1)  # (B, K, G) groups the rhymes share
        self.used = torch.zeros(B, K, self.han.numel(), dtype=torch.bool)  # (B, K, V) rhyme characters so far
        self.relaxed = torch.zeros(B, dtype=torch.bool)  # (B,) this step backs off
        self.backoffs = torch.zeros(B, dtype=torch.long)  # (B,)
        self.done = torch.zeros(B, dtype=torch.bool)  # (B,)
        self.title_max = title_max  # a title the model writes has at most this many characters
        self.max_new_tokens = title_max + 1 + int(self.length.max())  # enough for the longest poem

    def _to(self, device):
        for name in CONSTRAINT_TENSORS:
            setattr(self, name, getattr(self, name).to(device))

    def _now(self):
        """(B, K) each template's set index at the row's position, and (B, K) whether it is rhymed."""
        p = self.pos.clamp(max=self.slots.size(1) - 1)
        return self.slots[:, p].T, self.rhymed[:, p].T

    def _rhyme_ok(self):
        """(B, K, V): the tokens that may stand in a rhymed slot of each row's templates: in a group all the
        template's rhymes so far share, and not one of them."""
        shared = (self.groups.float() @ self.member.T.float()) > 0  # (B, K, G) @ (G, V) -> (B, K, V)
        return shared & ~self.used

    def _body_allowed(self):
        """(B, V): the tokens some template the row still fits allows at its position, backed off where none;
        sets self.relaxed for the rows that back off."""
        codes, rhymed = self._now()  # (B, K)
        allowed = self.sets[codes]  # (B, K, V)
        if rhymed.any():
            allowed = allowed & (~rhymed[..., None] | self._rhyme_ok())
        strict = (allowed & self.alive[..., None]).any(dim=1)  # (B, V)
        self.relaxed = ~strict.any(dim=1) & ~self.titling & ~self.done
        if self.relaxed.any():
            loose = (self.sets[self.base[codes]] & self.alive[..., None]).any(dim=1)  # (B, V)
            strict = torch.where(self.relaxed[:, None], loose, strict)
        return strict

    def _title_allowed(self, b, V):
        """Row b's title: its forced tokens (a 词牌's name and the newline), else Han characters (up to
        title_max) or, after at least one, the newline."""
        allowed = torch.zeros(V, dtype=torch.bool, device=self.han.device)
        if self.forced[b]:
            allowed[self.forced[b][0]] = True
            return allowed
        if self.title_len[b] < self.title_max:
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

    def _title_advance(self, tok):
        for b in self.titling.nonzero()[:, 0].tolist():
            self.forced[b] = self.forced[b][1:]
            if tok[b] == self.newline:  # titles are Han characters: a newline ends one
                self.titling[b] = False
            else:
                self.title_len[b] += 1

    def advance(self, idx_next):
        """Move each row on by the token it took, idx_next (B, 1) (after mask(), which decides the back-off)."""
        tok = idx_next[:, 0].to(self.pos.device)  # (B,)
        body = ~self.titling & ~self.done  # rows inside the poem at this step
        relaxed = self.relaxed & body
        self._title_advance(tok)
        codes, rhymed = self._now()  # (B, K)
        rows = torch.arange(len(tok), device=tok.device)
        fits = self.sets[codes, tok[:, None]]  # (B, K)
        rhyme_fits = (self.groups & self.member[tok][:, None, :]).any(-1) & ~self.used[rows, :, tok]  # (B, K)
        fits = fits & (~rhymed | rhyme_fits)
        fits = torch.where(relaxed[:, None], self.sets[self.base[codes], tok[:, None]], fits)
        alive = torch.where(body[:, None], self.alive & fits, self.alive)
        rhymes = (body & ~relaxed)[:, None] & rhymed & alive  # (B, K) templates that took a rhyme
        self.groups &= ~rhymes[..., None] | self.member[tok][:, None, :]
        self.used[rows, :, tok] |= rhymes
        self.alive = alive
        self.backoffs += relaxed.long()
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
    regular = "五绝, 七绝, 五律, 七律 (wujue, qijue, wulv, qilv), 对联 (duilian)"
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


def pattern_specs(pattern, is_ci, tone, rhyme):
    """The Specs of each template a pattern makes: a 词's one (rhyme only), a regular form's line_specs."""
    if is_ci:
        return [ci_specs(pattern, rhyme)]
    return line_specs(parse_pattern(pattern)[0][0], pattern_lines(pattern), tone, rhyme)


def constraint_for(meta, form=None, acrostic=None, rhyme=True, prompt="\n", batch_size=1, tone=True,
                   rhyme_book="pingshui"):
    """The PoemConstraint for sample.py's --form and --acrostic, or None when neither is set. tone (平仄) and
    rhyme shape the poem these ask for: tone the regular forms (a 词牌 has its own tones, not checked here),
    rhyme the lines closed by 。, both by rhyme_book (rhymebook.py). meta: the run's vocabulary (None: GPT-2
    BPE); prompt: the prompt as the model gets it, one string for all rows or a list with one per row (for
    --form=对联: the 上联 and a comma, couplet_prompt's). Every problem is a one-line UserError that says how
    to fix it."""
    acrostic = acrostic or ""
    if not form and not acrostic:
        return None
    if meta is None:
        check_vocabulary(meta, [], acrostic)
    book = rhymebook.book(rhyme_book)
    prompts = [prompt] * batch_size if isinstance(prompt, str) else list(prompt)
    if len(prompts) != batch_size:
        raise UserError(f"{len(prompts)} prompts for {batch_size} samples; give one prompt, or one per sample")
    if is_couplet(form):
        return couplet_constraint(meta, prompts, book, acrostic)
    patterns, forced_title = choose_patterns(meta, form, acrostic)
    check_vocabulary(meta, patterns, acrostic)
    stoi = meta["stoi"]
    if forced_title and any(c not in stoi for c in forced_title):
        forced_title = ""  # a name the vocabulary cannot spell: the model writes its own title
    starts = [title_start(p, stoi, forced_title) for p in prompts]
    is_ci = bool(form) and resolve_form(form, meta.get("ci_forms") or {})[2]
    templates = [compile_pattern(p, stoi, acrostic, specs)
                 for p in patterns for specs in pattern_specs(p, is_ci, tone, rhyme)]
    sets = SlotSets(meta["itos"], book)
    return PoemConstraint(templates, sets, sets.groups(ping_only=tone and not is_ci), stoi["\n"], starts,
                          title_cap(meta))


def title_cap(meta):
    """The longest title the model may write: meta.pkl's title_max (data/poetry/prepare.py measures its
    corpus' titles), else TITLE_MAX."""
    cap = meta.get("title_max")
    return cap if isinstance(cap, int) and cap > 0 else TITLE_MAX


def is_couplet(form):
    return ALIASES.get((form or "").lower(), form) == COUPLET


def couplet_constraint(meta, prompts, book, acrostic):
    """The PoemConstraint of a 下联: one template from couplet_specs, then the newline and a blank row."""
    if acrostic:
        raise UserError("--acrostic does not go with --form=对联; leave one of them out")
    if len(set(prompts)) != 1:
        raise UserError("--form=对联 takes one 上联 for all samples")
    upper = couplet_prompt(prompts[0], meta, book)[0][:-1]
    stoi = meta["stoi"]
    check_vocabulary(meta, [shape(upper + "。")], "")
    slots = [(s, False) if isinstance(s, Spec) else (stoi[s], False) for s in couplet_specs(upper, book)]
    templates = [slots + [(stoi["\n"], False)] * 2]
    sets = SlotSets(meta["itos"], book)
    return PoemConstraint(templates, sets, sets.groups(ping_only=True), stoi["\n"], [(False, 0, [])] * len(prompts))


def cut_poem(text, start=0):
    """A generated row cut where its poem ends (the blank row after it, and the newlines a finished row
    waits on, go): text is prompt + generation, start the prompt's length. A row that never ended is whole."""
    end = text.find("\n\n", start)
    return text if end < 0 else text[:end]


# -----------------------------------------------------------------------------
# measurements of a list of poems (experiments/poems.py): samples side by side with the real val poems.
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


def rule_rate(poems, tone=True, rhyme=True, book="pingshui"):
    """The share of the regular poems that keep the rule (keeps_rule, the one the masks enforce): tone for 平仄,
    rhyme for one rhyme group with no character twice; None when no poem is regular."""
    regular = [b for b in bodies(poems) if form_of(b)]
    rules = rhymebook.book(book)
    return sum(keeps_rule(b, rules, tone, rhyme) for b in regular) / len(regular) if regular else None


def corpus_titles(text):
    """The title rows of a corpus text in the records' layout (title row, poem rows, blank row)."""
    return {split_title(r)[0] for r in text.split("\n\n")} - {""}


def title_rate(poems, titles):
    """How readable the titles of poems (texts with their title row first) are against a corpus' titles
    (corpus_titles): title_in_corpus, the share found whole among them; title_from_words, the share made of
    words they use, every 2-character piece of the title found in some corpus title (a 1-character title:
    that character). None for both when no poem has a title."""
    written = [t for t in (split_title(p)[0] for p in poems) if t]
    if not written:
        return {"title_in_corpus": None, "title_from_words": None}
    pieces = {t[i:i + n] for t in titles for n in (1, 2) for i in range(len(t) - n + 1)}
    made_of_words = sum(all(t[i:i + 2] in pieces for i in range(max(len(t) - 1, 1))) for t in written)
    return {"title_in_corpus": sum(t in titles for t in written) / len(written),
            "title_from_words": made_of_words / len(written)}


def measure(poems, corpus=None, stoi=None):
    """All of experiments/poems.py's figures for a list of poems: form_rate, rhyme_rate (pinyin), tone_rate (平仄 kept),
    pingshui_rate (one 平水韵 group, no rhyme twice), rule_rate (both), repeat_rate and, given the training text
    (corpus, stoi), copied_lines, longest_copy and longest_copy_text."""
    figures = {"poems": len(poems), "form_rate": form_rate(poems), "rhyme_rate": rhyme_rate(poems),
               "tone_rate": rule_rate(poems, rhyme=False), "pingshui_rate": rule_rate(poems, tone=False),
               "rule_rate": rule_rate(poems), "repeat_rate": repeat_rate(poems)}
    if corpus is not None:
        figures.update(novelty(poems, corpus, stoi))
    return figures


def same_tones(lower, real, book):
    """Whether a written 下联 has the real 下联's tones (tone_pattern) wherever the book reads one in both; False for
    another length, None when no position of the two can be compared."""
    if len(lower) != len(real):
        return False
    pairs = [(a, b) for a, b in zip(tone_pattern(lower, book), tone_pattern(real, book)) if a and b]
    return all(a == b for a, b in pairs) if pairs else None


def measure_couplets(couplets, book="pingshui"):
    """experiments/poems.py's figures for 下联 written to real 上联: couplets is a list of (上联, real 下联, written
    下联), texts without a closing mark. in_form: the share of written 下联 that keep the 对联 rule (keeps_couplet,
    the mask's own); same_tones: the share that have the real 下联's tones (same_tones), of those where some
    position compares (tones_compared of them); None where none does."""
    rules = rhymebook.book(book)
    compared = [s for s in (same_tones(w, r, rules) for _, r, w in couplets) if s is not None]
    return {"couplets": len(couplets),
            "in_form": sum(keeps_couplet(u, w, rules) for u, _, w in couplets) / max(len(couplets), 1),
            "same_tones": sum(compared) / len(compared) if compared else None, "tones_compared": len(compared)}
