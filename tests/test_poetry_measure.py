"""
poetry.py's measurements (experiments/poems.py) on hand-made poems whose answers are known: form rate,
rhyme rate (pinyin rhyme_class), the shares keeping 平仄 and 平水韵 rhyme (keeps_rule, the masks' own rule),
repeated characters, novelty against a corpus, titles found in the corpus' titles or made of their words, and the
下联 written to real 上联 (measure_couplets: in form by keeps_couplet, the real 下联's tones shared).
Run: python -m pytest tests/test_poetry_measure.py
"""

import numpy as np

from babygpt import poetry
from babygpt import rhymebook

JINGYESI = "静夜思\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"    # 霜 uang, 乡 iang: both ang
CHUNXIAO = "春晓\n春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。"       # 鸟 iao, 少 ao; 处处 repeats
OFF_RHYME = "白日依山尽，黄河入海流。\n欲穷千里目，更上一层山。"          # no title; 流 ou, 山 an: 1 of 2
SHORT_LINE = "无题\n白日依山，黄河入海流。\n欲穷千里目，更上一层楼。"        # a 4-character line: not regular
QILV = ("登高\n风急天高猿啸哀，渚清沙白鸟飞回。\n无边落木萧萧下，不尽长江滚滚来。\n"
        "万里悲秋常作客，百年多病独登台。\n艰难苦恨繁霜鬓，潦倒新停浊酒杯。")  # 回 uei, 来 ai, 台 ai, 杯 ei: 2 of 4
POEMS = [JINGYESI, CHUNXIAO, OFF_RHYME, SHORT_LINE, QILV]


def test_rhyme_class_drops_medials_and_tones():
    pairs = {"霜": "ang", "乡": "ang", "光": "ang", "流": "ou", "楼": "ou", "鸟": "ao", "少": "ao", "元": "an",
             "月": "e", "过": "e", "云": "en", "林": "en", "听": "eng", "中": "eng", "穷": "eng", "，": None, "A": None}
    got = {ch: poetry.rhyme_class(ch) for ch in pairs}
    assert got == pairs, f"rhyme classes: got {got}"


def test_form_of_and_form_rate():
    forms = [poetry.form_of(poetry.split_title(p)[1]) for p in POEMS]
    assert forms == ["五绝", "五绝", "五绝", None, "七律"], f"forms: {forms}"
    assert poetry.form_rate(POEMS) == 4 / 5, f"form rate: {poetry.form_rate(POEMS)}"
    assert poetry.form_of("床前明月光，疑是地上霜。") is None, "two lines are no 绝句"
    assert poetry.form_of("床前明月光，疑是地上霜，举头望明月，低头思故乡") == "五绝", "marks other than 。 and an open end count"


def test_rhyme_rate_counts_even_lines_of_regular_poems():
    assert poetry.rhyme_hits(poetry.split_title(QILV)[1]) == (2, 4), "登高 by pinyin: 回 and 杯 (ei) miss 来, 台 (ai)"
    assert poetry.rhyme_hits(OFF_RHYME) == (1, 2), "a tie goes to the first even line's rhyme"
    rate = poetry.rhyme_rate(POEMS)  # 2 + 2 + 1 + 2 of 2 + 2 + 2 + 4; SHORT_LINE is not regular
    assert rate == 7 / 10, f"rhyme rate: {rate}"
    assert poetry.rhyme_rate([SHORT_LINE]) is None, "no regular poem: no rhyme rate"


def test_repeat_rate():
    assert poetry.repeat_rate([JINGYESI, CHUNXIAO]) == 1 / 8, "处处 is the one line of eight with a repeat"
    assert poetry.repeat_rate(["风风风风风，雨雨雨雨雨。"]) == 1.0, "every line repeats"


def test_novelty_against_the_training_text():
    train = JINGYESI + "\n\n" + CHUNXIAO + "\n\n"
    stoi = {c: i for i, c in enumerate(sorted(set(train)))}
    corpus = np.array([stoi[c] for c in train], dtype=np.uint16)
    sample = "床前明月光，疑是天上霜。\n举头望明月，低头思故乡。"  # one line changed
    novel = "江水绿如蓝，孤帆远影来。\n举头望明月，天涯共此时。"  # characters the corpus lacks, one line copied
    figures = poetry.measure([sample, novel], corpus, stoi)
    assert figures["copied_lines"] == 4 / 8, f"3 lines of the first and 1 of the second are in train: {figures}"
    assert figures["longest_copy_text"] == "上霜。\n举头望明月，低头思故乡。" and figures["longest_copy"] == 16, \
        f"the longest copied passage runs from 地上霜's 上霜 to the end: {figures}"
    assert figures["form_rate"] == 1.0 and figures["poems"] == 2, f"both are 五绝: {figures}"


def test_tone_and_pingshui_rates_use_the_masks_checker():
    tone, pingshui = poetry.rule_rate(POEMS, rhyme=False), poetry.rule_rate(POEMS, tone=False)
    assert tone == 2 / 4, f"of the 4 regular poems 登高 and OFF_RHYME (登鹳雀楼, 山 for 楼) keep 平仄: {tone}"
    assert pingshui == 3 / 4, f"静夜思 (阳), 春晓 (篠) and 登高 (灰) rhyme in one 平水韵 group, OFF_RHYME not: {pingshui}"
    figures = poetry.measure(POEMS)
    assert (figures["tone_rate"], figures["pingshui_rate"]) == (tone, pingshui), f"measure reports them: {figures}"
    assert poetry.rule_rate([SHORT_LINE]) is None, "no regular poem: no rate"


def test_title_rate_against_the_corpus_titles():
    titles = poetry.corpus_titles("\n\n".join(POEMS) + "\n\n")
    assert titles == {"静夜思", "春晓", "无题", "登高"}, f"one title per record, none for a record without: {titles}"
    written = ["静夜思\n床前明月光。", "春思\n床前明月光。", "夜思\n床前明月光。", "登高思\n床。", "秋\n床。", "床前明月光。"]
    got = poetry.title_rate(written, titles)
    # 静夜思 is a corpus title; 夜思 is made of its pieces; 春思 (春思) and 登高思 (高思) are not, nor 秋; the
    # untitled poem does not count
    assert got == {"title_in_corpus": 1 / 5, "title_from_words": 2 / 5}, f"title rates: {got}"
    assert poetry.title_rate(["床前明月光。"], titles) == {"title_in_corpus": None, "title_from_words": None}, \
        "no title written: no rate"


def test_tone_pattern_reads_the_2nd_4th_6th_characters_of_each_clause():
    got = poetry.tone_pattern("白日依山尽，黄河看", rhymebook.book("pingshui"))
    assert got == ["", "仄", "", "平", "", "", "", "平", ""], \
        f"日 仄 and 山 平 in the first clause, 河 平 after the comma; 看 has two tones, so none: {got}"


def test_measure_couplets_counts_form_and_shared_tones():
    upper, real = "白日依山尽", "黄河入海流"  # 日 仄, 山 平 at the 2nd and 4th; 河 平, 海 仄 opposed
    couplets = [(upper, real, "青山绕水流"),     # in form; 山 平, 水 仄: the real 下联's tones
                (upper, real, "黄河入海尽"),     # ends on 仄: out of form, though its tones are the real one's
                (upper, "绿水入海流", "青山绕水流"),  # in form, but the real 下联 has 水 仄 at the 2nd: not shared
                (upper, real, "青看绕思流"),     # in form; 看 and 思 have two tones: nothing to compare
                (upper, real, "黄河流")]         # another length: out of form, tones not shared
    got = poetry.measure_couplets(couplets)
    assert got["couplets"] == 5 and got["in_form"] == 3 / 5, f"the 1st, 3rd and 4th 下联 are in form: {got}"
    assert got["tones_compared"] == 4, f"every 下联 but 青看绕思流 has a position to compare: {got}"
    assert got["same_tones"] == 2 / 4, f"the 1st and 2nd share the real 下联's tones, of 4 compared: {got}"
    assert poetry.measure_couplets([(upper, real, "青看绕思流")])["same_tones"] is None, \
        "no position compared: no share"
