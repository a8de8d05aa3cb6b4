"""
Issue 10 on the sample side: the copy report (copycheck.py) and sample.py --ckpt / the best.pt hint.
The report is checked against a brute-force reference (Python's `in` on strings); sample.py end to end.
Run: python -m pytest tests/test_copycheck.py
"""

import os
import pickle
import re
import shutil

import numpy as np
import pytest
import torch

from conftest import TEXT, assert_user_error, run, write_dataset
from test_sample import samples

from babygpt import checkpoint as ck
from babygpt import copycheck


def as_text(tokens):
    """Token ids as a string, one character per id, so `in` and find() are the reference's substring search."""
    return "".join(chr(0x4E00 + int(t)) for t in tokens)


def reference(corpus, sample):
    """Brute force: the longest substring of sample found in corpus (the first in the sample, then in the
    corpus), and how many of the sample's 10-token windows occur in corpus."""
    text, s = as_text(corpus), as_text(sample)
    best = (0, -1, -1)
    for q in range(len(s)):
        n = best[0]  # only longer ones matter
        while q + n < len(s) and s[q:q + n + 1] in text:
            n += 1
        if n > best[0]:
            best = (n, q, text.find(s[q:q + n]))
    found = sum(s[q:q + 10] in text for q in range(len(s) - 9))
    return best, found


def random_case(rng):
    """A small corpus (sometimes periodic, so passages repeat) and samples mixing cut pieces and noise."""
    vocab, n = int(rng.integers(2, 30)), int(rng.integers(0, 3000))
    corpus = rng.integers(0, vocab, n).astype(np.uint16)
    if rng.random() < 0.3 and n > 100:
        corpus = np.tile(corpus[:int(rng.integers(1, 50))], 100)[:n]
    cases = []
    for _ in range(int(rng.integers(1, 5))):
        size = int(rng.integers(0, 120))
        if n and rng.random() < 0.5:
            pieces = [corpus[a:a + int(rng.integers(1, 25))] for a in rng.integers(0, n, size)]
            cases.append(np.concatenate(pieces + [np.zeros(0, np.uint16)])[:size])
        else:  # ids up to vocab + 1: some never occur in the corpus
            cases.append(rng.integers(0, vocab + 2, size))
    return corpus, cases


# -----------------------------------------------------------------------------
# copy_stats against the reference

@pytest.fixture(scope="module")
def corpus():
    """20k random tokens of 50 kinds: any 10-token passage in it occurs once."""
    return np.random.default_rng(0).integers(0, 50, 20_000).astype(np.uint16)


def test_a_cut_from_the_training_text_is_a_full_copy(corpus):
    cut = corpus[1234:1534]
    (c,) = copycheck.copy_stats(corpus, [cut])
    assert (c.length, c.sample_pos, c.corpus_pos) == (300, 0, 1234), f"a 300-token cut at 1234 should be found whole: {c}"
    assert c.windows_found == c.windows == 291, f"all 291 windows of the cut occur in the corpus: {c}"


def test_a_shuffled_sample_copies_almost_nothing(corpus):
    shuffled = np.random.default_rng(1).permutation(corpus[5000:5500])
    (c,) = copycheck.copy_stats(corpus, [shuffled])
    assert c.windows_found / c.windows < 0.02, f"shuffled text should have ~0% of its windows in the corpus: {c}"
    assert 1 < c.length < 10, f"a shuffled sample's longest copy should be a few tokens: {c}"
    (ref, _), = [reference(corpus, shuffled)]
    assert (c.length, c.sample_pos, c.corpus_pos) == ref, f"short copies must be exact too: {c} vs reference {ref}"


@pytest.mark.parametrize("chunk", [29, 211, copycheck.CHUNK])
def test_random_cases_match_the_reference(monkeypatch, chunk):
    # small chunks put chunk boundaries inside passages, which must still come out whole
    monkeypatch.setattr(copycheck, "CHUNK", chunk)
    rng = np.random.default_rng(chunk)
    for trial in range(60):
        corpus, cases = random_case(rng)
        for sample, c in zip(cases, copycheck.copy_stats(corpus, cases)):
            (length, q, p), found = reference(corpus, sample)
            assert c.length == length, f"trial {trial}: longest copy {c.length}, reference {length}"
            assert c.length == 0 or (c.sample_pos, c.corpus_pos) == (q, p), \
                f"trial {trial}: copy at sample {c.sample_pos}, corpus {c.corpus_pos}; reference {q}, {p}"
            assert c.windows_found == found and c.windows == max(len(sample) - 9, 0), \
                f"trial {trial}: {c.windows_found}/{c.windows} windows found, reference {found}"


def test_the_longest_copy_is_exact_at_both_ends():
    rng = np.random.default_rng(7)
    checked = 0
    for trial in range(80):
        corpus, cases = random_case(rng)
        text = as_text(corpus)
        for sample, c in zip(cases, copycheck.copy_stats(corpus, cases)):
            if c.length == 0:
                continue
            s, q, end = as_text(sample), c.sample_pos, c.sample_pos + c.length
            assert text[c.corpus_pos:c.corpus_pos + c.length] == s[q:end], \
                f"trial {trial}: the passage is not at the reported corpus offset {c.corpus_pos}"
            if q > 0:
                assert s[q - 1:end] not in text, f"trial {trial}: one token more on the left is in the corpus"
            if end < len(s):
                assert s[q:end + 1] not in text, f"trial {trial}: one token more on the right is in the corpus"
            checked += 1
    assert checked > 50, f"too few cases had a copy to check: {checked}"


def test_report_line_is_one_line():
    copy = copycheck.Copy(length=20, sample_pos=0, corpus_pos=12345, windows_found=3, windows=11)
    line = copycheck.report_line(0, copy, list("宝玉\n听了，忙笑道：“好妹妹你别恼”"), "".join, "characters")
    assert "\n" not in line and "宝玉\\n听了" in line, f"a newline in the passage should be shown as \\n: {line}"
    assert "20 characters" in line and "12,345" in line and "3 of 11" in line and "27.3%" in line, line
    none = copycheck.report_line(1, copycheck.Copy(0, -1, -1, 0, 0), list("xy"), "".join, "characters")
    assert "sample 2" in none and "no character of it" in none and "no windows" in none, none


def test_training_tokens_honours_the_datasets_dtype(tmp_path):
    data, out = tmp_path / "ds", tmp_path / "out"
    out.mkdir()
    meta = write_dataset(str(data))
    ids = np.array([70_000, 5, 70_001], dtype=np.uint32)  # ids past uint16, as prepare writes for >65,536 chars
    ids.tofile(data / "train.bin")
    meta["dtype"] = "uint32"
    with open(data / "meta.pkl", "wb") as f:
        pickle.dump(meta, f)
    torch.save({"config": {"dataset": str(data)}}, out / "ckpt.pt")
    tokens, _ = copycheck.training_tokens(str(out), "ckpt.pt", meta)
    assert tokens.dtype == np.uint32 and tokens.tolist() == ids.tolist(), f"train.bin read as {tokens.dtype}: {tokens}"


def test_gpt2_bpe_runs_are_reported_over_tokens(tmp_path):
    data, out = tmp_path / "bpe", tmp_path / "out"
    data.mkdir()
    out.mkdir()
    np.arange(1000, dtype=np.uint16).tofile(data / "train.bin")  # a BPE dataset: uint16 ids, no meta.pkl
    torch.save({"config": {"dataset": str(data)}}, out / "ckpt.pt")
    decode = lambda ids: "".join(f"<{i}>" for i in ids)  # noqa: E731  BPE tokens decode to several characters
    (line,) = copycheck.report_lines(str(out), "ckpt.pt", None, [list(range(500, 530))], decode)
    assert "30 tokens, at token 500" in line and "21 of 21 10-token windows" in line, line
    assert '"<500><501><5..."' in line, f"the quote should be the first {copycheck.SHOWN} characters: {line}"
    (note,) = copycheck.report_lines(None, "ckpt.pt", None, [[1, 2]], decode)
    assert note.startswith("note: no copy report") and "GPT-2" in note, f"GPT-2's own weights: one note: {note}"


# -----------------------------------------------------------------------------
# sample.py end to end

REPORT = re.compile(r"copy report, sample (\d+): longest copied passage (\d+) characters.*; (\d+) of (\d+) 10-character")


def sample(out, *args):
    proc = run("sample.py", f"--out_dir={out}", "--device=cpu", *args)
    assert proc.returncode == 0, f"sample.py failed:\n{proc.stderr}"
    return proc


def test_sample_py_reports_on_stderr_and_keeps_stdout(trained_run):
    args = ["--start=宝玉", "--num_samples=3", "--max_new_tokens=40"]
    on, off = sample(trained_run["out"], *args), sample(trained_run["out"], *args, "--copy_report=False")
    assert on.stdout == off.stdout, "the report must not change stdout (the seed's format)"
    assert "copy report" not in on.stdout and "copy report" not in off.stderr, "report on stderr, and off when asked"
    lines = [REPORT.search(l) for l in on.stderr.splitlines() if "copy report" in l]
    assert len(lines) == 3 and all(lines), f"one report line per sample expected:\n{on.stderr}"
    # the numbers are copy_stats' on the generated part (prompt left out) against the run's train.bin
    meta = ck.load_meta(os.path.join(trained_run["out"], "meta.pkl"))
    train = np.fromfile(os.path.join(trained_run["data"], "train.bin"), dtype=np.uint16)
    for (text, _), m in zip(samples(on.stdout), lines):
        (c,) = copycheck.copy_stats(train, [[meta["stoi"][ch] for ch in text[2:]]])
        assert (int(m[2]), int(m[3]), int(m[4])) == (c.length, c.windows_found, c.windows), \
            f"reported {m[0]!r}, expected {c}"


def moved_run(trained_run, tmp_path, dataset):
    """A copy of the tiny run whose checkpoint names another dataset folder."""
    out = tmp_path / "run"
    shutil.copytree(trained_run["out"], out)
    ckpt = ck.load_checkpoint(str(out))
    ckpt["config"]["dataset"] = str(dataset)
    ck.save_checkpoint(str(out), ckpt)
    return out


def test_missing_train_bin_is_one_note(trained_run, tmp_path):
    out = moved_run(trained_run, tmp_path, tmp_path / "gone")
    proc = sample(out, "--num_samples=2", "--max_new_tokens=5")
    notes = [l for l in proc.stderr.splitlines() if "copy report" in l]
    assert len(notes) == 1 and notes[0].startswith("note: no copy report") and "train.bin" in notes[0], \
        f"expected one note naming train.bin:\n{proc.stderr}"
    assert len(samples(proc.stdout)) == 2, "the samples are still printed"


def test_dataset_prepared_again_with_another_vocabulary_is_a_note_and_the_report_by_characters(trained_run, tmp_path):
    """A dataset prepared again with other ids (a cleaning that dropped text): the report still finds copies, by
    character, in its train.bin as it is now, and a note says so. The new text here shares a passage with the
    old one, so the sample's copies of it must still be found."""
    out = moved_run(trained_run, tmp_path, tmp_path / "other")
    write_dataset(str(tmp_path / "other"), text=("另一本书。" + TEXT) * 40)  # the ids shift, the text is still there
    proc = sample(out, "--num_samples=1", "--max_new_tokens=40", "--temperature=0")
    lines = [l for l in proc.stderr.splitlines() if "copy report" in l]
    assert len(lines) == 2 and "prepared again" in lines[0], f"a note, then the report:\n{proc.stderr}"
    assert "longest copied passage" in lines[1], f"a greedy sample of the memorised text copies it:\n{lines[1]}"


# -----------------------------------------------------------------------------
# --ckpt and the best.pt hint

def make_best(out, iter_num, loss_delta, noise=0.0):
    """best.pt as train.py writes it (no optimizer), from ckpt.pt, at iter_num and best_val_loss + loss_delta;
    noise changes its weights so its samples differ."""
    ckpt = ck.load_checkpoint(str(out))
    torch.manual_seed(0)
    best = {"model": {k: v + noise * torch.randn_like(v) for k, v in ckpt["model"].items()},
            "model_args": ckpt["model_args"], "iter_num": iter_num,
            "best_val_loss": ckpt["best_val_loss"] + loss_delta, "config": ckpt["config"]}
    torch.save(best, os.path.join(out, ck.BEST_NAME))
    return ckpt


def test_ckpt_best_pt_samples_that_file_and_the_hint(trained_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained_run["out"], out)
    args = ["--num_samples=1", "--max_new_tokens=30", "--copy_report=False"]
    plain = sample(out, *args)
    assert "best.pt" not in plain.stderr, f"no best.pt, no hint:\n{plain.stderr}"
    ckpt = make_best(out, iter_num=10, loss_delta=0.0, noise=0.5)  # the run's best, 10 iterations before ckpt.pt
    latest, best = sample(out, *args), sample(out, *args, "--ckpt=best.pt")
    assert latest.stdout == plain.stdout, "without --ckpt, ckpt.pt is still the one sampled"
    assert best.stdout != latest.stdout, "--ckpt=best.pt should sample best.pt's (other) weights"
    hints = [l for l in latest.stderr.splitlines() if "--ckpt=best.pt" in l]
    assert len(hints) == 1 and hints[0].startswith("note:") and "iteration 10" in hints[0], \
        f"sampling ckpt.pt with an earlier best.pt should give one hint:\n{latest.stderr}"
    assert "--ckpt=best.pt" not in best.stderr, f"no hint when best.pt is what is sampled:\n{best.stderr}"
    assert f"iteration {ckpt['iter_num']}" in hints[0], f"the hint should name ckpt.pt's iteration: {hints[0]}"


@pytest.mark.parametrize("iter_num, loss_delta, hint", [
    (10, 0.0, True),     # best.pt from an earlier eval of this run: ckpt.pt's weights did not beat it
    (20, 0.0, False),    # the same iteration as ckpt.pt: the latest save is the best
    (10, 0.5, False),    # worse than the best ckpt.pt has seen: a stale best.pt from another run
    (30, -0.5, False),   # from a later iteration than ckpt.pt: not from this run's history
])
def test_best_hint_only_when_best_pt_is_better(trained_run, tmp_path, iter_num, loss_delta, hint):
    out = tmp_path / "run"
    shutil.copytree(trained_run["out"], out)
    ckpt = make_best(out, iter_num, loss_delta)
    assert ckpt["iter_num"] == 20, f"the tiny run should end at iteration 20, not {ckpt['iter_num']}"
    got = ck.best_hint(str(out), "ckpt.pt", ckpt)
    assert ck.best_hint(str(out), "best.pt", ckpt) is None, "no hint when best.pt is the file sampled"
    assert (got is not None) == hint, f"best.pt at iteration {iter_num}, val loss {loss_delta:+}: hint {got!r}"


def test_ckpt_refusals(trained_run, tmp_path):
    assert_user_error(run("sample.py", f"--out_dir={trained_run['out']}", "--ckpt=nope.pt"), "nope.pt", "ckpt.pt")
    assert_user_error(run("sample.py", f"--out_dir={trained_run['out']}", "--ckpt="), "--ckpt")
    assert_user_error(run("sample.py", f"--out_dir={tmp_path}", "--ckpt=best.pt"), "best.pt", "holds none")
