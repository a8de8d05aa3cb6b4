"""
hfexport.py, offline: the shipped model exported to Hugging Face transformers gives babygpt's logits, greedy
text and character ids; an export comes back into babygpt (sample.py, train.py) with the same weights; the
refusals (adaptive head, the Hub offline or without a login, a folder that is not an export).
Run: python -m pytest tests/test_hfexport.py
"""

import json
import os
import pickle

import numpy as np
import pytest
import torch
from conftest import REPO, TINY, assert_user_error, run, write_dataset

pytestmark = pytest.mark.slow  # make test-fast leaves this file out

from babygpt import checkpoint as ck
from babygpt import engine
import sample
from model import GPT, GPTConfig

transformers = pytest.importorskip("transformers")
SHIPPED = os.path.join(REPO, "pretrained", "hlm")
# no network and an empty Hugging Face home: nothing can be downloaded, no login can be found
OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "HF_TOKEN": ""}


def hf_env(tmp_path, **extra):
    return dict(OFFLINE, HF_HOME=str(tmp_path / "hf-home"), **extra)


@pytest.fixture(scope="module")
def shipped_hf(tmp_path_factory):
    """pretrained/hlm exported as a user does it (no samples on the card: the tiny run's test covers them)."""
    base = tmp_path_factory.mktemp("hf")
    folder = str(base / "hlm")
    proc = run("hfexport.py", f"--out_dir={SHIPPED}", f"--hf_dir={folder}", "--samples=0",
               env_extra=hf_env(base, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, f"exporting the shipped model failed:\n{proc.stderr}"
    return folder


@pytest.fixture(scope="module")
def shipped():
    """babygpt's shipped model in float32 (its float16 weights widened) and its vocabulary."""
    checkpoint = ck.load_checkpoint(SHIPPED)
    model = ck.model_from_checkpoint({**checkpoint, "model": {k: v.float() for k, v in checkpoint["model"].items()}})
    return model.eval(), ck.load_meta(os.path.join(SHIPPED, "meta.pkl"))


def hf_model(folder):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(folder).eval()


def test_transformers_logits_match_babygpt(shipped_hf, shipped):
    model, meta = shipped
    text = "宝玉听了，忙笑道：“好妹妹，你别恼，我再不说了。”\n黛玉冷笑道：“我为的是我的心。”"
    x = torch.tensor([[meta["stoi"][c] for c in text]])  # (1, T)
    with torch.no_grad():
        ours, _ = model(x, x)  # targets given: logits at every position (1, T, V)
        theirs = hf_model(shipped_hf)(x).logits  # (1, T, V + 1): the last column is <unk>
    assert theirs.shape[-1] == meta["vocab_size"] + 1, f"vocabulary should be meta's plus <unk>: {theirs.shape}"
    diff = (theirs[..., :meta["vocab_size"]] - ours).abs().max().item()
    assert diff < 1e-4, f"transformers' logits differ from babygpt's by up to {diff}"


def test_greedy_generate_writes_what_sample_py_writes(shipped_hf, shipped):
    from transformers import AutoTokenizer
    prompt, block = "宝玉", shipped[0].config.block_size
    cfg = dict(sample.DEFAULTS, out_dir=SHIPPED, start=prompt, num_samples=1, max_new_tokens=block - len(prompt),
               temperature=0, device="cpu", dtype="float32", copy_report=False)
    samples = sample.start_samples(cfg, warn=lambda line: None)
    for _ in samples.steps():
        pass
    ours = samples.texts()[0]
    tok = AutoTokenizer.from_pretrained(shipped_hf)
    ids = tok(prompt, return_tensors="pt").input_ids  # (1, 2)
    out = hf_model(shipped_hf).generate(ids, do_sample=False)  # generation_config's max_length: the context
    theirs = tok.decode(out[0])
    assert len(out[0]) == block, f"generate should stop at the context, {block} tokens, wrote {len(out[0])}"
    assert theirs == ours, f"greedy text differs from sample.py --temperature=0:\nhf   {theirs!r}\nours {ours!r}"


def test_pipeline_writes_chinese_with_no_spaces(shipped_hf, shipped):
    from transformers import pipeline
    generate = pipeline("text-generation", model=shipped_hf, device="cpu")
    greedy = generate("宝玉笑道", do_sample=False)[0]["generated_text"]
    x = torch.tensor([[shipped[1]["stoi"][c] for c in "宝玉笑道"]])
    ours = "".join(shipped[1]["itos"][i] for i in engine.generate(shipped[0], x, 124, temperature=0)[0].tolist())
    assert greedy == ours, \
        f"the pipeline's greedy text should be babygpt's, character for character:\n{greedy!r}\n{ours!r}"
    torch.manual_seed(0)
    sampled = generate("宝玉笑道")[0]["generated_text"]  # generation_config.json: sampling, t=0.8, top_k=200
    cjk = sum("\u4e00" <= c <= "\u9fff" for c in sampled)
    assert sampled.startswith("宝玉笑道") and cjk > 0.6 * len(sampled), f"expected Chinese text: {sampled!r}"
    assert sampled.count(" ") < 3 and "<unk>" not in sampled, f"no spaces between characters, no <unk>: {sampled!r}"


def test_tokenizer_round_trips_the_val_split(shipped_hf, shipped):
    from transformers import AutoTokenizer
    meta = shipped[1]
    path = os.path.join(REPO, "data", "chinese", "val.bin")
    if not os.path.isfile(path):
        pytest.skip("the built-in corpus is not prepared: python data/chinese/prepare.py")
    ids = np.fromfile(path, dtype=np.uint16).tolist()
    text = "".join(meta["itos"][i] for i in ids)
    tok = AutoTokenizer.from_pretrained(shipped_hf)
    got = tok(text).input_ids
    first = next((i for i, (a, b) in enumerate(zip(got, ids)) if a != b), min(len(got), len(ids)))
    assert got == ids, f"ids differ from meta.pkl's from position {first} ({len(got)} ids vs {len(ids)})"
    assert tok.decode(got) == text, "decoding the val split's ids should give its text back, exactly"
    assert "\n" in text, "the val split should hold newlines, so their round trip is tested"
    unk = meta["vocab_size"]
    assert tok(" \n").input_ids == [meta["stoi"][" "], meta["stoi"]["\n"]], "a space and a newline are characters"
    assert tok("宝😀玉").input_ids == [meta["stoi"]["宝"], unk, meta["stoi"]["玉"]], \
        "a character outside meta.pkl should be one <unk>, its neighbours keeping their ids"


@pytest.fixture(scope="module")
def tiny_export(trained_run, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tinyhf") / "tiny")
    proc = run("hfexport.py", f"--out_dir={trained_run['out']}", f"--hf_dir={folder}", "--samples=2",
               "--sample_length=20", "--license=apache-2.0")
    assert proc.returncode == 0, f"exporting a tiny run failed:\n{proc.stderr}"
    return folder


def test_export_then_import_gives_the_same_weights(trained_run, tiny_export):
    original = ck.load_checkpoint(trained_run["out"])["model"]
    assert {v.dtype for v in original.values()} == {torch.float32}, "the tiny run trains in float32"
    model, meta = ck.load_pretrained(tiny_export)
    back = model.state_dict()
    for name, tensor in original.items():
        assert torch.equal(back[name], tensor), f"{name} changed on the way to transformers and back"
    extra = [k for k in back if k not in original]
    assert extra and all(k.endswith(".bias") and not back[k].any() for k in extra), \
        f"the only additions should be the zero biases of a bias=False model: {extra}"
    with open(os.path.join(trained_run["data"], "meta.pkl"), "rb") as f:
        want = pickle.load(f)
    assert meta["stoi"] == want["stoi"] and meta["itos"] == want["itos"], "the vocabulary should come back exactly"


def test_model_card_and_generation_config(trained_run, tiny_export):
    with open(os.path.join(tiny_export, "README.md"), encoding="utf-8") as f:
        card = f.read()
    header = card.split("---\n")[1]
    for line in ("language: zh", "license: apache-2.0", "library_name: transformers", "pipeline_tag: text-generation",
                 "datasets:\n- ds"):
        assert line in header, f"the card's metadata should hold {line!r}:\n{header}"
    last = [l for l in open(os.path.join(trained_run["out"], "log.csv")) if l[0].isdigit()][-1].split(",")
    assert f"**{float(last[2]):.4f}**" in card, f"the card should give log.csv's val loss {last[2]}:\n{card}"
    assert card.count("torch.Size([1, 21])") == 2 and "copy report, sample 1" in card, \
        f"the card should hold two samples and their copy report:\n{card}"
    with open(os.path.join(tiny_export, "generation_config.json")) as f:
        gen = json.load(f)
    with open(os.path.join(tiny_export, "config.json")) as f:
        config = json.load(f)
    assert (gen["do_sample"], gen["temperature"], gen["top_k"]) == (True, 0.8, 200), f"sample.py's defaults: {gen}"
    assert gen["max_length"] == config["n_positions"] == 16, f"max_length should be the context (16): {gen}"
    assert config["activation_function"] == "gelu_pytorch_tanh", "model.py's MLP uses GELU's tanh approximation"


def test_sample_and_train_read_the_exported_folder(trained_run, tiny_export, tmp_path):
    greedy = ["--temperature=0", "--num_samples=2", "--max_new_tokens=40", "--device=cpu", "--start=宝玉"]
    theirs = run("sample.py", f"--init_from={tiny_export}", *greedy)
    ours = run("sample.py", f"--out_dir={trained_run['out']}", *greedy)
    assert theirs.returncode == 0, theirs.stderr
    assert theirs.stdout == ours.stdout, \
        f"the exported folder should sample the run's text:\n{theirs.stdout}\n{ours.stdout}"
    assert "GPT-2 BPE" not in theirs.stderr, f"the character tokenizer should be used, not BPE:\n{theirs.stderr}"
    out = str(tmp_path / "ft")
    proc = run("train.py", f"--init_from={tiny_export}", f"--dataset={trained_run['data']}", f"--out_dir={out}",
               *TINY, "--max_iters=4", "--eval_interval=2")
    assert proc.returncode == 0, f"fine-tuning the exported folder failed:\n{proc.stderr}"
    assert os.path.isfile(os.path.join(out, "meta.pkl")), "the fine-tuned run keeps its vocabulary for sample.py"
    other = str(tmp_path / "other")
    write_dataset(other, text="天地玄黄宇宙洪荒日月盈昃辰宿列张\n" * 80)
    proc = run("train.py", f"--init_from={tiny_export}", f"--dataset={other}", f"--out_dir={tmp_path / 'x'}", *TINY)
    assert_user_error(proc, "other ids", "--dataset")


def save_run(folder, model, dataset):
    """A run folder hfexport.py reads: model's weights as train.py saves them, trained on dataset."""
    os.makedirs(folder)
    ck.save_checkpoint(folder, {"model": model.state_dict(), "model_args": ck.saved_model_args(model.config),
                                "iter_num": 0, "best_val_loss": 9.0, "config": {"dataset": dataset}})


def test_padded_vocabulary_rows_are_never_generated(tmp_path):
    """A model with 64 rows for 39 characters: only the real rows are exported, and <unk>'s is suppressed."""
    from transformers import AutoTokenizer
    meta = write_dataset(str(tmp_path / "ds"))
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=64, vocab_size=64, bias=True))
    with torch.no_grad():
        model.transformer.wte.weight[meta["vocab_size"]:] *= 50  # padded rows that would win every draw
    save_run(str(tmp_path / "run"), model, str(tmp_path / "ds"))
    folder = str(tmp_path / "hf")
    proc = run("hfexport.py", f"--out_dir={tmp_path / 'run'}", f"--hf_dir={folder}", "--samples=0")
    assert proc.returncode == 0, proc.stderr
    hf = hf_model(folder)
    assert hf.config.vocab_size == meta["vocab_size"] + 1, f"meta's characters plus <unk>, got {hf.config.vocab_size}"
    ids = AutoTokenizer.from_pretrained(folder)(["宝玉"] * 20, return_tensors="pt").input_ids
    torch.manual_seed(0)
    out = hf.generate(ids, temperature=2.0, top_k=0)  # flat: every allowed id is drawn often
    new = out[:, ids.size(1):]
    assert new.max().item() < meta["vocab_size"], \
        f"padded rows or <unk> were generated: {sorted(set(new.flatten().tolist()))[-5:]}"
    assert len(set(new.flatten().tolist())) > meta["vocab_size"] // 2, "the draws should range over the real characters"


def test_adaptive_head_is_refused_and_nothing_written(tmp_path):
    meta = write_dataset(str(tmp_path / "ds"))
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=meta["vocab_size"],
                          adaptive_head=8))
    save_run(str(tmp_path / "run"), model, str(tmp_path / "ds"))
    proc = run("hfexport.py", f"--out_dir={tmp_path / 'run'}", f"--hf_dir={tmp_path / 'hf'}")
    assert_user_error(proc, "adaptive_head=8", "GPT-2")
    assert not os.path.exists(tmp_path / "hf"), "a refused export should write nothing"


@pytest.mark.parametrize("env, words", [({"HF_HUB_OFFLINE": "1"}, ("offline", "HF_HUB_OFFLINE")),
                                        ({"HF_HUB_OFFLINE": "0"}, ("not logged in", "hf auth login"))])
def test_push_to_hub_refuses_offline_or_without_login_before_writing(trained_run, tmp_path, env, words):
    folder = tmp_path / "hf"
    proc = run("hfexport.py", f"--out_dir={trained_run['out']}", f"--hf_dir={folder}", "--push_to_hub=someone/tiny",
               env_extra=hf_env(tmp_path, **env))
    assert_user_error(proc, *words)
    assert not os.path.exists(folder), "the refusal should come before any file is written"


def test_a_folder_that_is_not_an_export_is_refused(trained_run, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine", encoding="utf-8")
    proc = run("hfexport.py", f"--out_dir={trained_run['out']}", f"--hf_dir={tmp_path / 'notes'}")
    assert_user_error(proc, "no earlier export", "new or empty folder")
    assert os.listdir(tmp_path / "notes") == ["todo.txt"], "a refused export should leave the folder as it was"
    proc = run("sample.py", f"--init_from={tmp_path / 'notes'}", "--device=cpu", env_extra=hf_env(tmp_path))
    assert_user_error(proc, "cannot load GPT-2", "save_pretrained")
