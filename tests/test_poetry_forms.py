"""
poetry.py's poems in exact form: with a tiny random-weight GPT (no training: the mask alone must hold the
form), every constrained sample is in its form, acrostics and rhyme (平水韵) hold, 词牌 patterns are followed, the
KV cache changes nothing, batched rows keep their own state, unconstrained generation is unchanged, and each
bad input is a one-line UserError.
Run: python -m pytest tests/test_poetry_forms.py
"""

import pytest
import torch

from babygpt import poetry
from babygpt import rhymebook
from babygpt.engine import generate_tokens, next_logits, penalize_repeats, sample_next
from model import GPT, GPTConfig
from babygpt.errors import UserError

POEMS = ("静夜思\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n\n"
         "登鹳雀楼\n白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。\n\n"
         "春晓\n春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。\n\n"
         "如梦令\n常记溪亭日暮，沉醉不知归路。\n兴尽晚回舟，误入藕花深处。\n争渡，争渡，惊起一滩鸥鹭。\n\n")
RUMENGLING = "6，6。5，6。2，2，6。"  # the pattern of the 如梦令 above
WORDS = "春夏秋冬江南雪梅？！、；"  # acrostic characters and the marks a 词 may use


@pytest.fixture(scope="module")
def meta():
    chars = sorted(set(POEMS + WORDS))
    return {"stoi": {c: i for i, c in enumerate(chars)}, "itos": dict(enumerate(chars)), "vocab_size": len(chars),
            "ci_forms": {"如梦令": RUMENGLING, "浣溪沙": "7，7，7。7，7，7。"}}


def tiny_model(vocab_size, block_size=128):
    """Random weights, scaled up so that the model has strong (and wrong) preferences the mask must override."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.3)
    return m


@pytest.fixture(scope="module")
def model(meta):
    return tiny_model(meta["vocab_size"])


def generate(model, meta, prompt="\n", rows=3, seed=0, temperature=1.0, kv_cache=True, **options):
    """Constrained samples of prompt: (texts cut at the poem's end, raw texts, the constraint)."""
    settings = {k: options.pop(k) for k in ("top_k", "top_p", "repetition_penalty") if k in options}
    c = poetry.constraint_for(meta, prompt=prompt, batch_size=rows, **options)
    prompts = [prompt] * rows if isinstance(prompt, str) else prompt  # one per row, all of one length
    x = torch.tensor([[meta["stoi"][ch] for ch in p] for p in prompts])  # (rows, T)
    gens = [torch.Generator().manual_seed(seed + i) for i in range(rows)]
    new = list(generate_tokens(model, x, c.max_new_tokens, temperature, generators=gens, kv_cache=kv_cache,
                                      constraint=c, **settings))
    y = torch.cat([x, *new], dim=1)  # (rows, T + steps)
    raw = ["".join(meta["itos"][i] for i in row) for row in y.tolist()]
    return [poetry.cut_poem(t, len(p)) for t, p in zip(raw, prompts)], raw, c


def assert_in_form(text, raw, prompt, pattern):
    """The poem is the pattern exactly (lengths, marks, a row per sentence), its title a Han title, and a
    finished row only waited on newlines after it."""
    assert raw[len(text):].strip("\n") == "", f"after the poem a finished row should hold newlines only: {raw!r}"
    title, body = poetry.split_title(text[len(prompt) - len(prompt.lstrip("\n")):])
    assert poetry.shape(body) == pattern, f"{body!r} has shape {poetry.shape(body)}, the form is {pattern}"
    assert body == poetry.layout(body.replace("\n", "")), f"rows should end after each 。: {body!r}"
    assert all(map(poetry.is_han, body.replace("\n", "").translate({ord(c): None for c in poetry.PUNCT}))), \
        f"a line holds something that is not a Chinese character: {body!r}"
    assert 0 < len(title) <= poetry.TITLE_MAX and all(map(poetry.is_han, title)), f"bad title {title!r} in {text!r}"
    return title, body


@pytest.mark.parametrize("form", ["五绝", "七绝", "五律", "七律", "wujue", "qilv"])
def test_every_sample_is_in_its_form(model, meta, form):
    pattern = poetry.FORMS[poetry.ALIASES.get(form, form)]
    for seed in (0, 10):
        for temperature in (0.5, 1.0, 2.0):
            texts, raw, _ = generate(model, meta, form=form, seed=seed, temperature=temperature)
            for text, r in zip(texts, raw):
                title, body = assert_in_form(text, r, "\n", pattern)
                assert poetry.form_of(body) == poetry.ALIASES.get(form, form), f"{body!r} is not a {form}"


def test_top_k_top_p_and_penalty_never_bring_back_a_masked_token(model, meta):
    c = poetry.constraint_for(meta, form="五绝", prompt="静夜思\n", batch_size=2)
    logits = torch.zeros(2, meta["vocab_size"])
    logits[:, meta["stoi"]["，"]] = 100.0  # the model's favourite is a comma, forbidden as a line's first token
    masked = c.mask(logits)
    for options in (dict(top_k=1), dict(top_k=3, top_p=0.1), dict(temperature=0)):
        tok = sample_next(penalize_repeats(masked, torch.zeros(2, 1, dtype=torch.long), 1.3), **options)
        assert all(meta["itos"][t] not in poetry.PUNCT for t in tok[:, 0].tolist()), \
            f"{options} sampled a forbidden mark: {tok.tolist()}"
    for options in (dict(top_k=1), dict(top_k=2, top_p=0.5, repetition_penalty=1.5), dict(temperature=0.0)):
        t = options.pop("temperature", 1.0)
        texts, raw, _ = generate(model, meta, form="七绝", temperature=t, **options)
        for text, r in zip(texts, raw):
            assert_in_form(text, r, "\n", poetry.FORMS["七绝"])


def test_acrostic_lines_start_with_its_characters(model, meta):
    for acrostic, lines in (("春夏秋冬", 4), ("江南春雪梅夏秋冬", 8)):
        for seed in (0, 5):
            texts, raw, _ = generate(model, meta, acrostic=acrostic, seed=seed)
            for text in texts:
                title, body = poetry.split_title(text)
                got = poetry.poem_lines(body)
                assert poetry.form_of(body) and len(got) == lines, f"{acrostic}: not a {lines}-line poem: {body!r}"
                assert [line[0] for line in got] == list(acrostic), f"lines should start with {acrostic}: {body!r}"
    texts, raw, _ = generate(model, meta, form="七律", acrostic="江南春雪梅夏秋冬")
    assert all(poetry.form_of(poetry.split_title(t)[1]) == "七律" for t in texts), f"not 七律: {texts}"


def assert_rhymes(body, tone=True, book="pingshui"):
    ends = [line[-1] for line in poetry.poem_lines(body)[1::2]]
    assert poetry.keeps_rule(body, rhymebook.book(book), tone=tone, rhyme=True), \
        f"even lines end on {ends}: not one {book} group, or a rhyme twice (tone={tone}): {body!r}"


def test_rhyme_holds_for_every_even_line(model, meta):
    for options in (dict(form="五律"), dict(form="七绝"), dict(acrostic="春夏秋冬")):
        for tone in (True, False):
            for seed in (0, 3, 7):
                texts, _, c = generate(model, meta, tone=tone, seed=seed, temperature=1.5, **options)
                for text in texts:
                    body = poetry.split_title(text)[1]
                    assert poetry.form_of(body), f"{options} gave no regular poem: {body!r}"
                    assert_rhymes(body, tone)
                assert c.backoffs.sum() == 0, f"{options}, tone={tone}: no position should back off here"
    assert poetry.constraint_for(meta, rhyme=True) is None, "rhyme shapes a form's poem; alone it asks for none"


def test_ci_pattern_and_its_title(model, meta):
    for seed in (0, 4):
        texts, raw, _ = generate(model, meta, form="如梦令", seed=seed, rhyme=True)
        for text, r in zip(texts, raw):
            title, body = assert_in_form(text, r, "\n", RUMENGLING)
            assert title == "如梦令", f"from nothing, a 词's title row is its 词牌, got {title!r}"
            ends = [line[-1] for line in poetry.poem_lines(body)]
            assert poetry.rhymes_together([ends[i] for i in (1, 3, 6)], rhymebook.book("pingshui"), ping_only=False), \
                f"the 。 lines should rhyme in one 平水韵 group, no character twice: {body!r}"
    texts, raw, _ = generate(model, meta, prompt="春晓\n", form="如梦令")
    assert all(t.startswith("春晓\n") for t in texts), f"a given title stays: {texts}"
    assert_in_form(texts[0], raw[0], "春晓\n", RUMENGLING)
    texts, raw, _ = generate(model, meta, prompt="如梦", form="如梦令")
    assert all(t.startswith("如梦令\n") for t in texts), f"a started 词牌 name is finished: {texts}"


def test_titles_from_the_prompt(model, meta):
    texts, raw, _ = generate(model, meta, prompt="静夜", form="五绝")
    for text, r in zip(texts, raw):
        title, body = assert_in_form(text, r, "静夜", poetry.FORMS["五绝"])
        assert title.startswith("静夜") and len(title) <= poetry.TITLE_MAX, f"the title should go on from 静夜: {title!r}"
    context = POEMS[:30] + "\n\n"  # earlier records are context: a new title comes next
    texts, raw, _ = generate(model, meta, prompt=context, form="五绝", rows=2)
    for text, r in zip(texts, raw):
        assert_in_form(text[len(context):], r[len(context):], "\n", poetry.FORMS["五绝"])


def test_cached_and_uncached_give_the_same_poems(model, meta):
    for options in (dict(form="七律", rhyme=True), dict(acrostic="春夏秋冬"), dict(form="如梦令")):
        cached = generate(model, meta, prompt="春晓\n", kv_cache=True, **options)[1]
        uncached = generate(model, meta, prompt="春晓\n", kv_cache=False, **options)[1]
        assert cached == uncached, f"{options}: the KV cache changed the constrained tokens"


def test_past_block_size_the_form_still_holds(meta):
    small = tiny_model(meta["vocab_size"], block_size=24)  # a 七律 and its title are ~90 tokens: the cache refills
    texts, raw, _ = generate(small, meta, form="七律", acrostic="江南春雪梅夏秋冬")
    for text, r in zip(texts, raw):
        title, body = assert_in_form(text, r, "\n", poetry.FORMS["七律"])
        assert_rhymes(body)


def test_batched_rows_keep_their_own_state(model, meta):
    prompts = ["静夜思\n", "\n\n春晓", "春眠不觉"]  # the poem at once; a title to go on with, twice
    texts, raw, c = generate(model, meta, prompt=prompts, form="五绝", rhyme=True, temperature=1.5)
    assert len(set(texts)) == 3, f"three rows with their own seeds should differ: {texts}"
    for i, p in enumerate(prompts):
        alone = generate(model, meta, prompt=p, rows=1, seed=i, form="五绝", rhyme=True, temperature=1.5)[1][0]
        assert raw[i][:len(alone)] == alone, \
            f"row {i} in a batch should be the poem it is alone:\n{raw[i]!r}\n{alone!r}"
        assert_in_form(texts[i], raw[i], p, poetry.FORMS["五绝"])
    assert bool(c.done.all()), "every row should be done"
    steps = len(raw[0]) - len(prompts[0])
    ends = [len(t) - len(p) + 2 for t, p in zip(texts, prompts)]  # + the newline and the blank row
    assert steps == max(ends) < c.max_new_tokens, \
        f"generation should stop once every row is done: {steps} steps, rows done after {ends}"


def reference_tokens(model, idx, steps, temperature, top_k, top_p, penalty, generators, kv_cache):
    """generate_tokens as it was before the poem constraints: the loop unmodified generation must still be."""
    cache, out = None, []
    for _ in range(steps):
        logits, cache = next_logits(model, idx, cache, kv_cache)
        logits = penalize_repeats(logits, idx[:, -model.config.block_size:], penalty)
        idx_next = sample_next(logits, temperature, top_k, top_p, generators)
        idx = torch.cat((idx, idx_next), dim=1)
        out.append(idx_next)
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("kv_cache", [True, False])
def test_unconstrained_generation_is_unchanged(model, meta, kv_cache):
    idx = torch.tensor([[meta["stoi"]["\n"]]] * 2)
    for temperature, top_k, top_p, penalty in ((1.0, None, None, 1.0), (0.8, 5, 0.9, 1.3), (0, None, None, 1.0)):
        args = (temperature, top_k, top_p, penalty)
        with torch.no_grad():
            want = reference_tokens(model, idx, 150, *args, [torch.Generator().manual_seed(i) for i in (1, 2)],
                                    kv_cache)
        got = torch.cat(list(generate_tokens(model, idx, 150, temperature, top_k, top_p, penalty,
                                                    [torch.Generator().manual_seed(i) for i in (1, 2)], kv_cache)), 1)
        assert torch.equal(got, want), f"without a constraint the tokens changed ({args}, kv_cache={kv_cache})"
    assert poetry.constraint_for(meta) is None, "no option set: no constraint"


def one_line_error(meta, match, **options):
    with pytest.raises(UserError) as e:
        poetry.constraint_for(meta, **options)
    message = str(e.value)
    assert "\n" not in message, f"a UserError should be one line: {message!r}"
    for word in match:
        assert word in message, f"the message should mention {word!r}: {message}"


def test_bad_inputs_are_one_line_errors(meta):
    one_line_error(meta, ["如梦", "nearest"], form="如梦")
    one_line_error({**meta, "ci_forms": {}}, ["浣溪沙", "--include=tang,ci"], form="浣溪沙")
    one_line_error(meta, ["5 characters", "4"], acrostic="春夏秋冬江")
    one_line_error(meta, ["七律", "8 lines"], form="七律", acrostic="春夏秋冬")
    one_line_error(meta, ["'龙'"], acrostic="春龙秋冬")
    one_line_error(meta, ["'A'", "Chinese"], acrostic="春A秋冬")
    one_line_error(None, ["GPT-2 BPE"], form="五绝")
    no_comma = {**meta, "stoi": {c: i for c, i in meta["stoi"].items() if c != "，"}}
    one_line_error(no_comma, ["'，'", "prepare"], form="五绝")
    one_line_error(meta, ["rhyme book 'tang'", "pingshui"], form="五绝", rhyme_book="tang")
    one_line_error(meta, ["title", "床前"], form="五绝", prompt="静夜思\n床前")
    one_line_error(meta, ["2 prompts"], form="五绝", prompt=["\n", "\n"], batch_size=3)
