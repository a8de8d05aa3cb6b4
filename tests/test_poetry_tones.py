"""
平仄, 平水韵 rhyme and 对联 (poetry.py, rhymebook.py): the rhyme book's tables, the one checker (keeps_rule,
keeps_couplet) on real poems, and every constrained sample keeping its rule, on a tiny random-weight GPT (the
mask alone must hold it) and on the shipped pretrained/poetry model, for each regular form, with an acrostic,
in a batch, with and without the KV cache; the back-off where the vocabulary has no fitting character; the
bad 上联s' one-line errors.
Run: python -m pytest tests/test_poetry_tones.py
"""

import os

import pytest
import torch
from test_poetry_forms import POEMS, generate, tiny_model

from babygpt import poetry
from babygpt import rhymebook
from conftest import REPO
from babygpt.errors import UserError

PINGSHUI = rhymebook.book("pingshui")
DENGGUAN = "白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。"  # 仄起, first line unrhymed, 流 楼 in 尤
DENGGAO = ("风急天高猿啸哀，渚清沙白鸟飞回。\n无边落木萧萧下，不尽长江滚滚来。\n"
           "万里悲秋常作客，百年多病独登台。\n艰难苦恨繁霜鬓，潦倒新停浊酒杯。")  # 哀 回 来 台 杯: all 灰
JINGYESI = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"  # a 古绝: 月 and 上 both 仄 at the 4th
SHIPPED = os.path.join(REPO, "pretrained", "poetry")
FORMS = ["五绝", "七绝", "五律", "七律"]


@pytest.fixture(scope="module")
def meta():
    chars = sorted(set(POEMS + "春夏秋冬江南雪梅？！、；" + "东同风中看千万里山水长"))
    return {"stoi": {c: i for i, c in enumerate(chars)}, "itos": dict(enumerate(chars)), "vocab_size": len(chars),
            "ci_forms": {}}


@pytest.fixture(scope="module")
def model(meta):
    return tiny_model(meta["vocab_size"])


def test_pingshui_tables_map_traditional_groups_to_simplified_characters():
    assert PINGSHUI.groups("东") & PINGSHUI.groups("同"), "东 and 同 share 一东"
    assert PINGSHUI.tones("东") == {"平"} and PINGSHUI.tones("尽") == {"仄"}, "东 is 平, 尽 仄"
    for ch in "看思教重":
        assert PINGSHUI.tones(ch) == {"平", "仄"}, f"{ch} has a 平 and a 仄 reading: {PINGSHUI.tones(ch)}"
    assert PINGSHUI.groups("门", ping_only=True) & PINGSHUI.groups("言", ping_only=True), \
        "门 and 言 rhyme in 十三元, though not in modern Mandarin"
    assert PINGSHUI.groups("看", ping_only=True) == {"寒"}, f"看's 平 group: {PINGSHUI.groups('看', True)}"
    assert PINGSHUI.groups("风") == PINGSHUI.groups("風") == {"东"}, "the simplified and the listed form (風)"
    assert PINGSHUI.tones("A") == set() and PINGSHUI.groups("，") == set(), "not a character of the book: nothing"
    xinyun = rhymebook.book("xinyun")
    assert xinyun.tones("东") == {"平"} and xinyun.tones("月") == {"仄"}, "Mandarin tones 1/2 are 平, 3/4 仄"
    assert not xinyun.groups("门") & xinyun.groups("言"), "in Mandarin 门 (en) and 言 (an) do not rhyme"
    with pytest.raises(UserError, match="xinyun"):
        rhymebook.book("tang")


def test_checker_on_real_poems():
    assert poetry.keeps_rule(DENGGUAN, PINGSHUI), "登鹳雀楼 keeps 平仄 and rhymes in 尤"
    assert poetry.keeps_rule(DENGGAO, PINGSHUI), "登高 keeps 平仄 and rhymes in 灰 (by pinyin 2 of 4 miss)"
    assert not poetry.keeps_rule(JINGYESI, PINGSHUI), "静夜思 breaks 对 at the 4th character (月, 上)"
    assert poetry.keeps_rule(JINGYESI, PINGSHUI, tone=False), "its rhyme (霜 乡, 七阳) holds"
    twice = DENGGUAN.replace("楼。", "流。")
    assert not poetry.keeps_rule(twice, PINGSHUI, tone=False), f"a rhyme character twice: {twice!r}"
    assert not poetry.keeps_rule("白日依山尽，黄河入海流。", PINGSHUI), "two lines are no regular poem"
    assert poetry.keeps_couplet("白日依山尽", "黄河入海流", PINGSHUI), "a real couplet is in form"
    assert not poetry.keeps_couplet("白日依山尽", "白日依山尽", PINGSHUI), "the 上联 again is no 下联"
    assert not poetry.keeps_couplet("白日依山尽", "黄河入海尽", PINGSHUI), "a 下联 ends on 平"
    assert not poetry.keeps_couplet("白日依山尽", "黄河入海流水", PINGSHUI), "a 下联 has the 上联's length"


def test_the_model_picks_the_tone_pattern(meta):
    """At the first line's 2nd character both a 平 and a 仄 character may come: 平起 and 仄起 stay open."""
    c = poetry.constraint_for(meta, form="五绝", prompt="静夜思\n")
    logits = torch.zeros(1, meta["vocab_size"])
    c.advance(torch.tensor([[meta["stoi"]["山"]]]))  # the 1st character is free
    allowed = {meta["itos"][i] for i in torch.isfinite(c.mask(logits))[0].nonzero()[:, 0].tolist()}
    assert "东" in allowed and "尽" in allowed, f"a 平 (东) and a 仄 (尽) character should both be open: {allowed}"
    assert all(PINGSHUI.tones(ch) for ch in allowed), f"a character the book does not know at a 平仄 position: {allowed}"


@pytest.mark.parametrize("form", FORMS)
def test_every_tiny_model_sample_keeps_its_rule(model, meta, form):
    for book in ("pingshui", "xinyun"):
        for acrostic in ("", "春夏秋冬江南雪梅"[:poetry.pattern_lines(poetry.FORMS[form])]):
            for seed, temperature in ((0, 1.0), (5, 2.0)):
                texts, _, c = generate(model, meta, form=form, acrostic=acrostic, rhyme_book=book, seed=seed,
                                       temperature=temperature, rows=4)
                for text in texts:
                    body = poetry.split_title(text)[1]
                    assert poetry.form_of(body) == form, f"not a {form}: {body!r}"
                    assert poetry.keeps_rule(body, rhymebook.book(book)), f"{book} 平仄/rhyme broken: {body!r}"
                    lines = poetry.poem_lines(body)
                    assert not acrostic or "".join(line[0] for line in lines) == acrostic, f"heads: {body!r}"
                assert c.backoffs.sum() == 0, f"{form}, {book}: nothing should back off with this vocabulary"


def test_cache_and_batch_change_nothing(model, meta):
    for options in (dict(form="七律"), dict(acrostic="春夏秋冬"), dict(form="对联", prompt="白日依山尽，")):
        prompt = options.pop("prompt", "春晓\n")
        cached = generate(model, meta, prompt=prompt, kv_cache=True, **options)[1]
        uncached = generate(model, meta, prompt=prompt, kv_cache=False, **options)[1]
        assert cached == uncached, f"{options}: the KV cache changed the constrained tokens"
        alone = generate(model, meta, prompt=prompt, rows=1, seed=2, **options)[1][0]
        assert cached[2][:len(alone)] == alone, f"{options}: row 2 of a batch should be the poem it is alone"


def test_back_off_where_no_character_fits(meta):
    """A vocabulary with no 仄 character: the 仄 positions back off to any Han character, counted, and every
    sample still ends, in its form; the positions that can keep the rule keep it."""
    ze = [c for c in meta["stoi"] if poetry.is_han(c) and "仄" in PINGSHUI.tones(c)]
    stoi = {c: i for i, c in enumerate(c for c in meta["stoi"] if c not in ze)}
    small = {"stoi": stoi, "itos": {i: c for c, i in stoi.items()}, "vocab_size": len(stoi), "ci_forms": {}}
    texts, raw, c = generate(tiny_model(len(stoi)), small, form="五律", rows=3)
    for text, r in zip(texts, raw):
        body = poetry.split_title(text)[1]
        assert poetry.form_of(body) == "五律", f"a back-off must keep the form: {body!r}"
        assert r[len(text):].strip("\n") == "", f"the row should end after its poem: {r!r}"
        ends = [line[-1] for line in poetry.poem_lines(body)[1::2]]
        assert poetry.rhymes_together(ends, PINGSHUI), f"the 平 rhyme needs no 仄 character and holds: {body!r}"
    assert bool(c.done.all()), "every row should finish"
    assert (c.backoffs >= 3).all(), f"each 五律 has 3+ 仄 positions to relax (odd line ends): {c.backoffs.tolist()}"


def test_every_tiny_model_couplet_is_in_form(model, meta):
    for upper in ("白日依山尽", "春眠不觉晓，处处闻啼鸟", "欲穷千里目"):
        texts, raw, c = generate(model, meta, prompt=upper + "，", form="对联", rows=4, temperature=1.5)
        for text in texts:
            lower = text[len(upper) + 1:]
            assert poetry.keeps_couplet(upper, lower, PINGSHUI), f"{upper!r} got the 下联 {lower!r}"
        assert c.backoffs.sum() == 0, f"{upper}: nothing should back off"


@pytest.mark.parametrize("upper, words", [
    ("", ["上联", "--start="]),
    ("白日依山流", ["ends on 平", "仄"]),
    ("白日依山龙", ["'龙'", "vocabulary"]),
    ("白日A山尽", ["'A'", "Chinese"]),
    ("，白日", ["clauses"]),
])
def test_bad_couplets_are_one_line(meta, upper, words):
    with pytest.raises(UserError) as e:
        poetry.couplet_prompt(upper, meta, PINGSHUI)
    assert "\n" not in str(e.value), f"one line: {e.value!r}"
    assert all(w in str(e.value) for w in words), f"{upper!r}: the message should say {words}: {e.value}"
    with pytest.raises(UserError, match="acrostic"):
        poetry.constraint_for(meta, form="对联", acrostic="春", prompt="白日依山尽，")


@pytest.fixture(scope="module")
def shipped():
    if not os.path.exists(os.path.join(SHIPPED, "ckpt.pt")):
        pytest.skip("pretrained/poetry is not here")
    import sample
    return lambda **cfg: sample.start_samples(dict(sample.DEFAULTS, out_dir=SHIPPED, device="cpu", num_samples=4,
                                                   copy_report=False, **cfg), warn=lambda line: None)


@pytest.mark.parametrize("form", FORMS)
def test_every_shipped_model_sample_keeps_its_rule(shipped, form):
    for options in (dict(start="秋夜\n"), dict(acrostic="春夏秋冬江南雪梅"[:poetry.pattern_lines(poetry.FORMS[form])])):
        samples = shipped(form=form, **options)
        for _ in samples.steps():
            pass
        for text in samples.texts():
            body = poetry.split_title(text)[1]
            assert poetry.form_of(body) == form and poetry.keeps_rule(body, PINGSHUI), \
                f"{form} {options}: 平仄 or 平水韵 rhyme broken: {text!r}"
        assert samples.constraint.backoffs.sum() == 0, f"{form}: the shipped vocabulary should never back off"


def test_shipped_model_couplets(shipped):
    for upper in ("春回大地千山秀", "明月松间照", "海阔凭鱼跃，天高任鸟飞"[:5]):
        samples = shipped(form="对联", start=upper)
        for _ in samples.steps():
            pass
        for text in samples.texts():
            shown, lower = text.split("\n")
            assert shown == upper and poetry.keeps_couplet(upper, lower, PINGSHUI), f"{upper!r}: {text!r}"
