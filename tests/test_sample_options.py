"""
sample.py's generation options end to end: batch, cache, streaming, prompts, --out_file, refusals.
Run: python -m pytest tests/test_sample_options.py
"""

import os

from conftest import assert_user_error, run
from test_sample import samples


def sample(trained_run, *args):
    proc = run("sample.py", f"--out_dir={trained_run['out']}", "--device=cpu", *args)
    assert proc.returncode == 0, f"sample.py failed:\n{proc.stderr}"
    return proc


def test_cache_stream_and_batch_size_do_not_change_the_text(trained_run):
    # the trained_run model has block_size 16: prompt 2 + 12 new characters stay inside it
    args = ["--start=宝玉", "--max_new_tokens=12", "--num_samples=3", "--temperature=1.2"]
    cached = sample(trained_run, *args).stdout
    assert len(samples(cached)) == 3, f"expected 3 samples in the seed's format:\n{cached}"
    assert sample(trained_run, *args, "--kv_cache=False").stdout == cached, \
        "the uncached reference should write the same samples"
    assert sample(trained_run, *args, "--stream=True").stdout == cached, \
        "streaming should print exactly what the non-streaming run prints"
    one = samples(sample(trained_run, *args[:3], "--num_samples=1", "--temperature=1.2").stdout)
    assert one == samples(cached)[:1], "sample 1 should be the same whether 1 or 3 samples are asked for"


def test_temperature_zero_is_greedy(trained_run):
    got = samples(sample(trained_run, "--start=宝玉", "--max_new_tokens=20", "--num_samples=2",
                         "--temperature=0", "--seed=1").stdout)
    other = samples(sample(trained_run, "--start=宝玉", "--max_new_tokens=20", "--num_samples=1",
                           "--temperature=0", "--seed=2").stdout)
    assert got[0] == got[1] == other[0], f"greedy decoding should not depend on the seed: {got + other}"


def test_unknown_prompt_characters_are_dropped_with_a_warning(trained_run):
    proc = sample(trained_run, "--start=宝Z玉Q", "--max_new_tokens=5", "--num_samples=1")
    assert "'QZ'" in proc.stderr and "warning" in proc.stderr, f"the warning should list Q and Z: {proc.stderr}"
    text, n = samples(proc.stdout)[0]
    assert text.startswith("宝玉") and n == 2 + 5, f"generation should go on from the known characters: {text!r}"
    assert_user_error(run("sample.py", f"--out_dir={trained_run['out']}", "--start=XYZ"), "vocabulary", "XYZ")


def test_gb18030_prompt_file_and_out_file(trained_run, tmp_path):
    prompt = tmp_path / "gbk.txt"
    prompt.write_bytes("黛玉".encode("gb18030"))
    out_file = tmp_path / "samples.txt"
    proc = sample(trained_run, f"--start=FILE:{prompt}", "--max_new_tokens=8", "--num_samples=2",
                  f"--out_file={out_file}")
    got = samples(proc.stdout)
    assert got[0][0].startswith("黛玉"), f"a GB18030 prompt file should be decoded: {got[0][0]!r}"
    written = out_file.read_text(encoding="utf-8")
    assert written == "".join(f"{t}\n---------------\n" for t, _ in got), \
        f"--out_file should hold the printed samples:\n{written}"


def test_refusals(trained_run, tmp_path):
    out = f"--out_dir={trained_run['out']}"
    assert_user_error(run("sample.py", out, "--max_new_tokens=0"), "max_new_tokens")
    assert_user_error(run("sample.py", out, "--top_p=0"), "top_p")
    assert_user_error(run("sample.py", out, "--top_p=1.5"), "top_p")
    assert_user_error(run("sample.py", out, "--repetition_penalty=0"), "repetition_penalty")
    missing = tmp_path / "no" / "such" / "s.txt"
    assert_user_error(run("sample.py", out, f"--out_file={missing}"), "does not exist")
    assert not os.path.exists(tmp_path / "no"), "a refused --out_file should create nothing"


def test_check_settings_checks_the_values_it_is_given():
    """The page calls check_settings with its own values: each must be checked, not sample.py's defaults."""
    import pytest

    import sample as sample_py
    from babygpt.errors import UserError
    sample_py.check_settings(**sample_py.DEFAULTS)  # the defaults pass
    for key, bad in [("ckpt", ""), ("top_p", 0.0), ("num_samples", 0), ("temperature", -1.0)]:
        with pytest.raises(UserError, match=key):
            sample_py.check_settings(**dict(sample_py.DEFAULTS, **{key: bad}))


def test_the_sample_generator_is_what_main_prints(trained_run):
    """main, the page and bench all sample through start_samples(): its texts are main's, piece by piece."""
    import sample as sample_py
    args = ["--start=宝玉", "--max_new_tokens=12", "--num_samples=2", "--temperature=1.2"]
    printed = samples(sample(trained_run, *args).stdout)
    cfg = dict(sample_py.DEFAULTS, out_dir=trained_run["out"], device="cpu", start="宝玉", max_new_tokens=12,
               num_samples=2, temperature=1.2)
    notes = []
    gen = sample_py.start_samples(cfg, warn=notes.append)
    pieces = ["宝玉", "宝玉"]
    for step in gen.steps():
        pieces = [p + new for p, new in zip(pieces, step)]
    assert gen.texts() == pieces, "the pieces, joined, should be the whole texts"
    assert pieces == [text for text, _ in printed], f"the generator should write what sample.py prints: {printed}"
    assert len(gen.copy_report()) == 2, "one copy report line per sample"
