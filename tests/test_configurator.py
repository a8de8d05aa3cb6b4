"""
Configuration: nanoGPT's globals -> config file -> --key=value, with refusals that help.
Run: python -m pytest tests/test_configurator.py
"""

import os

import pytest
from conftest import REPO, assert_user_error, run

import train
from configurator import configure, documented_keys
from babygpt.errors import UserError

DEFAULTS = {"batch_size": 12, "dropout": 0.0, "device": "auto", "compile": True, "start": "\n"}
SCRIPT = os.path.join(REPO, "train.py")


def test_cli_overrides_and_types():
    cfg = configure(DEFAULTS, ["--batch_size=3", "--dropout=0", "--device=cpu", "--compile=False"], SCRIPT)
    assert cfg["batch_size"] == 3, "an int key should take the int given"
    assert cfg["dropout"] == 0.0 and isinstance(cfg["dropout"], float), "--dropout=0 should become the float 0.0"
    assert cfg["device"] == "cpu", "a string value needs no quotes"
    assert cfg["compile"] is False, "False should parse as a bool"


def test_string_key_keeps_text_that_looks_like_a_number():
    assert configure(DEFAULTS, ["--start=123"], SCRIPT)["start"] == "123", "--start=123 is the text '123'"
    assert configure(DEFAULTS, ["--start=宝玉"], SCRIPT)["start"] == "宝玉", "Chinese text needs no quotes"


@pytest.mark.parametrize("arg, words", [
    (["--batch_size=abc"], ["batch_size", "int"]),
    (["--batch_size=2.5"], ["batch_size", "int"]),
    (["--compile=1"], ["compile", "bool"]),
    (["--batch_szie=3"], ["did you mean 'batch_size'"]),
    (["--batch_size"], ["--batch_size=value"]),
    (["no_such_config.py"], ["not found"]),
])
def test_refusals(arg, words):
    with pytest.raises(UserError) as err:
        configure(DEFAULTS, arg, SCRIPT)
    for w in words:
        assert w in str(err.value), f"{arg}: message should mention {w!r}: {err.value}"


def test_config_file_then_command_line(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text("batch_size = 7\ndropout = 0.2\n", encoding="utf-8")
    cfg = configure(DEFAULTS, [str(path), "--batch_size=9"], SCRIPT)
    assert cfg["dropout"] == 0.2, "the config file should set dropout"
    assert cfg["batch_size"] == 9, "--key=value given after the file should win over it"


def test_given_holds_the_keys_set_even_to_their_default(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text("dropout = 0.0\n", encoding="utf-8")  # train.py's default, written out
    given = set()
    configure(DEFAULTS, [str(path), "--batch_size=12"], SCRIPT, given)  # 12: the default again
    assert given == {"dropout", "batch_size"}, f"the keys set, and only those: {given}"


def test_config_file_typo_is_caught(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text("droput = 0.2\n", encoding="utf-8")
    with pytest.raises(UserError) as err:
        configure(DEFAULTS, [str(path)], SCRIPT)
    assert "did you mean 'dropout'" in str(err.value), f"a typo should name the closest key: {err.value}"


def test_seed_config_values_exactly():
    cfg = configure(train.DEFAULTS, [os.path.join(REPO, "config", "train_chinese.py")], SCRIPT)
    seed = dict(out_dir="out-chinese", eval_interval=250, eval_iters=200, log_interval=10,
                always_save_checkpoint=True, wandb_log=False, wandb_project="chinese",
                wandb_run_name="mini-gpt", dataset="chinese", gradient_accumulation_steps=1,
                batch_size=64, block_size=256, n_layer=9, n_head=12, n_embd=384, dropout=0.2,
                learning_rate=1e-3, max_iters=2000, lr_decay_iters=2000, min_lr=1e-4, beta2=0.99,
                warmup_iters=100)
    for key, value in seed.items():
        assert cfg[key] == value, f"config/train_chinese.py: {key} is {cfg[key]!r}, the seed has {value!r}"


def test_every_config_file_loads():
    names = sorted(n for n in os.listdir(os.path.join(REPO, "config")) if n.endswith(".py"))
    for name in ("finetune_gpt2.py", "eval_gpt2.py", "eval_gpt2_xl.py", "train_gpt2.py", "train_shakespeare_char.py"):
        assert name in names, f"config/{name} is missing"
    for name in names:  # every config is a train.py config
        given = set()
        cfg = configure(train.DEFAULTS, [os.path.join(REPO, "config", name)], SCRIPT, given)  # raises on a bad key
        train.check_config(cfg, given)  # and its values pass train.py's own checks


def test_help_lists_keys_defaults_and_meaning():
    proc = run("train.py", "--help")
    assert proc.returncode == 0, f"--help should succeed: {proc.stderr}"
    for key in train.DEFAULTS:
        assert f"--{key}" in proc.stdout, f"--help does not list {key}"
    line = next(l for l in proc.stdout.splitlines() if "--batch_size" in l)
    assert "12" in line and "sequences per micro-batch" in line, f"--help line lacks default or meaning: {line}"
    assert "NAME" not in proc.stdout, "an imported constant (checkpoint.BEST_NAME) is not a setting:\n" + proc.stdout


def test_unknown_key_from_the_command_line_is_one_line():
    assert_user_error(run("train.py", "--learnig_rate=1e-3"), "learning_rate")


def test_documented_keys_are_train_py_settings_with_their_comments():
    documented = documented_keys(SCRIPT)  # what --help and the web page show
    for key, default in train.DEFAULTS.items():
        assert key in documented, f"train.py's {key} is missing from documented_keys"
        assert documented[key][0] == default, f"{key}: documented default {documented[key][0]!r} vs {default!r}"
        assert documented[key][1], f"train.py's {key} has no comment beside it for --help and the web page"
    assert documented["init_from"][1].endswith("or a saved GPT-2"), "a comment's indented next line continues it"
    assert documented["grad_clip"][1] == "clip gradient norm to this; 0 disables", "a section heading is not part of it"
