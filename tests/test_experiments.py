"""
The experiments in experiments/ (recipes compared, quality measured): their runners and figures on tiny runs.
Run: python -m pytest tests/test_experiments.py
"""

import json
import os

import pytest

import train
from conftest import TINY, run, write_dataset
from configurator import configure
from babygpt import checkpoint as ck
from babygpt import corpora
from experiments import finetune, time_to_loss
from test_poetry_sample import POEMS


@pytest.mark.slow
def test_time_to_loss_times_each_eval_from_process_start(tiny_data):
    """experiments/time_to_loss.py's runner on a tiny dataset: an eval every EVAL_TOKENS trained tokens,
    times rising from process start, val losses read from the run's log.csv (train.py's output is not read)."""
    tiny = [a for a in TINY if not a.startswith(("--eval_iters", "--log_interval"))]
    tokens_per_iter = 4 * 16
    old = time_to_loss.EVAL_TOKENS
    time_to_loss.EVAL_TOKENS = 5 * tokens_per_iter  # an eval every 5 iterations
    try:
        points = time_to_loss.run_to_loss("tiny", None, [*tiny, f"--dataset={tiny_data}", "--max_iters=12"])
    finally:
        time_to_loss.EVAL_TOKENS = old
    assert [it for _, it, _ in points] == [0, 5, 10, 12], f"evals every 5 iterations and at the end: {points}"
    seconds = [s for s, _, _ in points]
    assert seconds == sorted(seconds) and seconds[0] > 0, f"times should rise from process start: {seconds}"
    assert points[-1][2] < points[0][2], f"val loss should fall: {points}"
    assert time_to_loss.first_below(points, points[1][2]) == points[1][0], "the first eval at or below the target"
    assert time_to_loss.first_below(points, 0.0) is None, "a target never reached gives None"


def test_time_to_loss_keeps_the_fastest_time_of_identical_runs():
    """Repeated runs of one recipe must agree on every loss; each eval then keeps its fastest time."""
    slow = [(10.0, 0, 8.4), (40.0, 100, 5.0), (70.0, 200, 4.5)]
    fast = [(8.0, 0, 8.4), (45.0, 100, 5.0), (60.0, 200, 4.5)]
    assert time_to_loss.fastest([slow, fast]) == [(8.0, 0, 8.4), (40.0, 100, 5.0), (60.0, 200, 4.5)]
    nearly = [(8.0, 0, 8.4), (45.0, 100, 5.0001), (60.0, 200, 4.5)]  # threads may sum in another order
    assert time_to_loss.fastest([slow, nearly]) == [(8.0, 0, 8.4), (40.0, 100, 5.0), (60.0, 200, 4.5)]
    with pytest.raises(SystemExit, match="different losses"):
        time_to_loss.fastest([slow, [(8.0, 0, 8.4), (45.0, 100, 5.1), (60.0, 200, 4.5)]])


def test_time_to_loss_reads_the_loss_reached_in_the_baselines_time():
    """'Ends lower in the same time': babygpt's last eval at or before the baseline's end."""
    points = [(10.0, 0, 8.4), (40.0, 100, 5.0), (70.0, 200, 4.5)]
    assert time_to_loss.last_within(points, 69.9) == (40.0, 100, 5.0), "an eval after the deadline does not count"
    assert time_to_loss.last_within(points, 70.0) == (70.0, 200, 4.5), "an eval at the deadline counts"
    assert time_to_loss.last_within(points, 5.0) is None, "no eval yet gives None"


def test_baselines_are_config_files_train_py_reads():
    """The recipes time_to_loss compares with are config files a user can also train with."""
    nanogpt = configure(train.DEFAULTS, ["experiments/config/baseline_nanogpt_cpu.py"], train.__file__)
    old_demo = configure(train.DEFAULTS, ["experiments/config/baseline_old_demo.py"], train.__file__)
    assert (nanogpt["n_layer"], nanogpt["batch_size"], nanogpt["compile"]) == (4, 12, False), nanogpt
    assert (old_demo["n_layer"], old_demo["batch_size"], old_demo["compile"]) == (4, 32, True), old_demo


def test_time_to_loss_command_lists_its_options():
    proc = run("experiments/time_to_loss.py", "--help")
    assert proc.returncode == 0, f"experiments/time_to_loss.py --help failed:\n{proc.stderr}"
    for option in ("--config", "--baseline", "--target", "--repeat"):
        assert option in proc.stdout, f"--help should list {option}:\n{proc.stdout}"


DENGGAO = ("登高\n风急天高猿啸哀，渚清沙白鸟飞回。\n无边落木萧萧下，不尽长江滚滚来。\n"
           "万里悲秋常作客，百年多病独登台。\n艰难苦恨繁霜鬓，潦倒新停浊酒杯。\n\n")  # a 七律: two couplets to hold out


@pytest.fixture(scope="module")
def tiny_poet(tmp_path_factory):
    """A tiny model trained on a few 唐诗 and a 七律 (the last poem, so the val split holds it)."""
    base = tmp_path_factory.mktemp("poet")
    write_dataset(str(base / "ds"), text=(POEMS + DENGGAO) * 30)
    proc = run("train.py", f"--dataset={base / 'ds'}", f"--out_dir={base / 'out'}", *TINY, "--max_iters=10",
               "--eval_interval=10")
    assert proc.returncode == 0, f"training the tiny poet failed:\n{proc.stderr}"
    return base / "out"


def test_poems_measures_each_option_beside_the_real_poems(tiny_poet):
    """experiments/poems.py on a tiny poet: a column of figures for the real val poems and one for each poem
    option; with --form=七绝 every poem is one in form; titles measured where the model writes its own."""
    proc = run("experiments/poems.py", f"--run={tiny_poet}", "--what=poems", "--num_samples=2", "--per_title=1",
               "--json")
    assert proc.returncode == 0, f"experiments/poems.py failed:\n{proc.stderr}"
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(figures) == ["poems"], f"--what=poems measures the poems only: {list(figures)}"
    figures = figures["poems"]
    columns = ["real val poems", "no option", "七绝 tone, rhyme off", "--form=七绝", "--acrostic, own title"]
    assert list(figures) == columns, f"one column per option, the real poems first: {list(figures)}"
    assert [figures[c]["poems"] for c in columns[:4]] == [2, 2, 2, 2], f"2 titles x 1 poem each: {figures}"
    form = figures["--form=七绝"]
    assert (form["form_rate"], form["tone_rate"], form["pingshui_rate"], form["rule_rate"]) == (1.0, 1.0, 1.0, 1.0), \
        f"--form=七绝 keeps the form, 平仄 and the 平水韵 rhyme in every poem: {form}"
    assert "title_in_corpus" in figures["real val poems"] and "title_in_corpus" not in form, \
        f"titles are measured for the real poems, not where the val title was the prompt: {figures}"


def test_poems_couplets_writes_a_lower_line_to_held_out_real_couplets(tiny_poet):
    """experiments/poems.py --what=couplets on the tiny poet: the 上联 of the val split's 七律 (登高's 颔联 and
    颈联), a 下联 written to each with no option and with --form=对联, measured beside the real 下联."""
    proc = run("experiments/poems.py", f"--run={tiny_poet}", "--what=couplets", "--couplets=2", "--per_title=2",
               "--json")
    assert proc.returncode == 0, f"experiments/poems.py --what=couplets failed:\n{proc.stderr}"
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(figures) == ["couplets"], f"--what=couplets measures the couplets only: {list(figures)}"
    figures = figures["couplets"]
    assert list(figures) == ["real 下联", "no option", "--form=对联"], f"the real 下联 first: {list(figures)}"
    real, form = figures["real 下联"], figures["--form=对联"]
    assert (real["couplets"], real["in_form"], real["same_tones"]) == (2, 1.0, 1.0), \
        f"登高's 颔联 and 颈联 are in form, and share their own tones: {real}"
    assert form["couplets"] == 4 and form["in_form"] == 1.0, f"2 上联 x 2 下联, every one in form: {form}"
    assert figures["no option"]["couplets"] == 4, f"2 上联 x 2 下联 with no option: {figures}"
    proc = run("experiments/poems.py", f"--run={tiny_poet}", "--what=couplets", "--couplets=1", "--per_title=1")
    assert proc.returncode == 0 and "in_form" in proc.stdout and "the first three" in proc.stdout, \
        f"the table and the couplets written should print:\n{proc.stdout}\n{proc.stderr}"


def test_poems_takes_its_titles_from_another_dataset(tiny_poet, tmp_path):
    """--dataset: the val titles (and the corpus of copies) come from that dataset, so two models compare on one
    dataset's titles; here a dataset of the four 绝句 alone, where the tiny poet's own val split is mostly 登高."""
    other = tmp_path / "jueju"
    write_dataset(str(other), text=POEMS * 30)
    proc = run("experiments/poems.py", f"--run={tiny_poet}", f"--dataset={other}", "--what=poems",
               "--num_samples=1", "--per_title=1")
    assert proc.returncode == 0, f"experiments/poems.py --dataset failed:\n{proc.stderr}"
    assert f"val titles of {os.path.relpath(other, finetune.ROOT)}," in proc.stdout, proc.stdout
    real = proc.stdout.split("real val poems, the first two:\n")[1].split("\n")[0]
    assert real in ("静夜思", "春晓", "登鹳雀楼", "黄鹤楼送孟浩然之广陵"), f"a title of --dataset's poems: {real!r}"


def test_finetune_texts_are_in_neither_shipped_model_s_data_and_their_documented_size():
    """The two texts experiments/finetune.py trains on, read from data/poetry's tarball as the docs describe them."""
    tarball = os.path.join(finetune.ROOT, "data", "poetry", corpora.TARBALL)
    if not os.path.isfile(tarball):
        pytest.skip("no chinese-poetry tarball: make setup fetches it")
    songshi, guwen = finetune.songshi_text(tarball), finetune.guwen_text(tarball)
    assert round(len(songshi), -3) == 261_000, f"苏轼's 宋诗 should be some 261k characters: {len(songshi):,}"
    assert round(len(guwen), -3) == 143_000, f"古文观止 should be some 143k characters: {len(guwen):,}"
    assert songshi.startswith("郭纶\n") and "\n\n" in songshi, f"poems as data/poetry lays them out: {songshi[:40]!r}"
    poetry_meta = ck.load_meta(os.path.join(finetune.ROOT, "pretrained", "poetry", "meta.pkl"))
    assert poetry_meta.get("held_out") == ["苏轼"], f"the shipped poetry model should hold out 苏轼: {poetry_meta.get('held_out')}"
    hlm = ck.load_checkpoint(os.path.join(finetune.ROOT, "pretrained", "hlm"), mmap=True)
    assert hlm["config"]["dataset"] == "chinese", "the 红楼梦 model learned 红楼梦 alone"
    assert guwen.startswith("郑伯克段于鄢\n"), f"an essay's title row first: {guwen[:40]!r}"


def test_finetune_command_lists_its_options():
    proc = run("experiments/finetune.py", "--help")
    assert proc.returncode == 0, f"experiments/finetune.py --help failed:\n{proc.stderr}"
    for option in ("--config", "--scratch_config", "--scratch_args", "--budget", "--text"):
        assert option in proc.stdout, f"--help should list {option}:\n{proc.stdout}"
