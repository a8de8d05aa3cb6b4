"""
sample.py's poem options end to end (--form, --acrostic, --tone, --rhyme, --rhyme_book, a title as --start,
--form=对联 with a 上联) on a tiny model trained on a few 唐诗: every sample is one poem in its form, keeping 平仄
and rhyme, printed in sample.py's format, under a title no longer than meta.pkl's title_max; the bad inputs are
one line.
Run: python -m pytest tests/test_poetry_sample.py
"""

import pickle
import shutil

import pytest
from conftest import TINY, assert_user_error, run, write_dataset

from babygpt import poetry
from babygpt import rhymebook
from test_sample import samples

POEMS = ("静夜思\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n\n"
         "春晓\n春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。\n\n"
         "登鹳雀楼\n白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。\n\n"
         "黄鹤楼送孟浩然之广陵\n故人西辞黄鹤楼，烟花三月下扬州。\n孤帆远影碧空尽，唯见长江天际流。\n\n")


@pytest.fixture(scope="module")
def poet(tmp_path_factory):
    """A 2-layer model after a few steps on the poems: enough to sample, far too little to know the forms."""
    base = tmp_path_factory.mktemp("poet")
    write_dataset(str(base / "ds"), text=POEMS * 30)
    proc = run("train.py", f"--dataset={base / 'ds'}", f"--out_dir={base / 'out'}", *TINY, "--max_iters=10",
               "--eval_interval=10")
    assert proc.returncode == 0, proc.stderr
    return str(base / "out")


def poems_of(poet, *args):
    proc = run("sample.py", f"--out_dir={poet}", "--device=cpu", "--num_samples=4", *args)
    assert proc.returncode == 0, f"sample.py failed:\n{proc.stderr}"
    got = samples(proc.stdout)
    assert len(got) == 4, f"four samples in sample.py's format expected:\n{proc.stdout}"
    for text, n in got:
        assert n == len(text), f"torch.Size([1, N]) should count the poem's characters ({len(text)}): {n}"
    return [text for text, _ in got]


def test_acrostic_keeps_tone_and_rhyme_every_time(poet):
    for args, book in ((["--temperature=1.5"], "pingshui"), (["--rhyme_book=xinyun"], "xinyun")):
        for text in poems_of(poet, "--acrostic=春白故床", *args):
            title, body = poetry.split_title(text)
            lines = poetry.poem_lines(body)
            assert poetry.form_of(body) in ("五绝", "七绝"), f"four characters make a 绝句: {text!r}"
            assert [line[0] for line in lines] == list("春白故床"), f"line i starts with character i: {text!r}"
            assert poetry.keeps_rule(body, rhymebook.book(book)), f"平仄 and {book} rhyme by default: {text!r}"


def test_couplet_prints_the_upper_line_then_the_lower(poet):
    for text in poems_of(poet, "--form=对联", "--start=白日依山尽", "--temperature=1.5"):
        upper, lower = text.split("\n")
        assert upper == "白日依山尽", f"the 上联 is printed on its row: {text!r}"
        assert poetry.keeps_couplet(upper, lower, rhymebook.book("pingshui")), f"the 下联 is out of form: {text!r}"
    args = ["--form=对联", "--start=欲穷千里目", "--num_samples=2", "--device=cpu"]
    plain = run("sample.py", f"--out_dir={poet}", *args)
    streamed = run("sample.py", f"--out_dir={poet}", *args, "--stream=True")
    assert plain.returncode == streamed.returncode == 0, plain.stderr + streamed.stderr
    assert streamed.stdout == plain.stdout, "streaming a 对联 should print exactly what the plain run prints"


def test_tone_and_rhyme_off_give_the_form_alone(poet):
    texts = poems_of(poet, "--form=五绝", "--tone=False", "--rhyme=False", "--temperature=2.0")
    assert all(poetry.form_of(poetry.split_title(t)[1]) == "五绝" for t in texts), f"not 五绝: {texts}"
    book = rhymebook.book("pingshui")
    assert not all(poetry.keeps_rule(poetry.split_title(t)[1], book) for t in texts), \
        f"with --tone=False --rhyme=False a near-random model should break the rule somewhere: {texts}"


@pytest.mark.parametrize("form", ["五律", "qijue"])
def test_form_and_a_title_prompt(poet, form):
    for text in poems_of(poet, f"--form={form}", "--start=春晓", "--temperature=2.0"):
        title, body = poetry.split_title(text)
        assert title.startswith("春晓"), f"the prompt is the title: {text!r}"
        assert poetry.form_of(body) == poetry.ALIASES.get(form, form), f"every sample should be a {form}: {text!r}"


def test_a_written_title_keeps_to_the_cap_in_meta(poet, tmp_path):
    def titles(out):
        return [poetry.split_title(t)[0] for t in poems_of(out, "--acrostic=春白故床", "--temperature=2.0")]

    uncapped = titles(poet)  # the tiny run's meta.pkl has no title_max: poetry.TITLE_MAX holds
    assert all(0 < len(t) <= poetry.TITLE_MAX for t in uncapped), f"titles over TITLE_MAX: {uncapped}"
    assert any(len(t) > 2 for t in uncapped), f"the test needs titles longer than the cap below: {uncapped}"
    capped = str(tmp_path / "capped")
    shutil.copytree(poet, capped)
    with open(f"{capped}/meta.pkl", "rb") as f:
        meta = pickle.load(f)
    with open(f"{capped}/meta.pkl", "wb") as f:
        pickle.dump({**meta, "title_max": 2}, f)
    got = titles(capped)
    assert all(0 < len(t) <= 2 for t in got), f"meta.pkl's title_max=2 should cap every written title: {got}"


def test_stream_prints_the_same_poems(poet):
    args = ["--form=七绝", "--num_samples=2", "--device=cpu"]
    plain = run("sample.py", f"--out_dir={poet}", *args)
    streamed = run("sample.py", f"--out_dir={poet}", *args, "--stream=True")
    assert plain.returncode == streamed.returncode == 0, plain.stderr + streamed.stderr
    assert streamed.stdout == plain.stdout, "streaming should print exactly what the plain run prints"


@pytest.mark.parametrize("args, words", [
    (["--form=如梦令"], ["unknown form '如梦令'", "python data/poetry/prepare.py --include=tang,ci"]),
    (["--form=haiku"], ["unknown form 'haiku'", "五绝, 七绝, 五律, 七律"]),
    (["--acrostic=春白"], ["has 2 characters", "give 4"]),
    (["--acrostic=猫狗鸡鸭"], ["never saw", "猫"]),
    (["--form=七律", "--acrostic=春白故床"], ["七律", "8"]),
    (["--form=七绝", "--start=春晓\n床前明月光，"], ["a title", "not the start of a poem"]),
    (["--form=对联"], ["上联", "--start="]),
    (["--form=对联", "--start=黄河入海流"], ["ends on 平 (流)"]),
    (["--form=对联", "--start=猫狗入海尽"], ["'猫狗'", "vocabulary"]),
    (["--form=五绝", "--rhyme_book=tang"], ["--rhyme_book", "pingshui", "xinyun"]),
])
def test_bad_poem_options_are_one_line(poet, args, words):
    assert_user_error(run("sample.py", f"--out_dir={poet}", "--device=cpu", *args), *words)
