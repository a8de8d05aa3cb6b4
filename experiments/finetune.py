"""
Fine-tuning the shipped models against training from scratch, on a text in neither one's training data.

    python experiments/finetune.py                   # fine-tuning the shipped models vs from scratch, ~22 min
    python experiments/finetune.py --text=guwen      # the same on prose: 古文观止
    python experiments/finetune.py --budget=120 --scratch_args="--dropout=0.1" --batch_size=16

A text in neither shipped model's training data, from the chinese-poetry tarball: 苏轼's 宋诗 (261k
characters as data/poetry lays poems out) or, with --text=guwen, 古文观止's essays (143k characters); the last
10 % is val. It is prepared as a user would: once on its own vocabulary, once per shipped model with
--vocab_from. On one core each, two lanes run side by side: one trains from scratch (--scratch_config, default
config/train_chinese_cpu.py, plus --scratch_args) for 4x --budget seconds; the other trains from scratch for
--budget, then fine-tunes each shipped model (--config, default config/finetune_chinese.py, the poetry model at
learning rate 3e-4, plus any --key=value) for --budget. Each run's max_iters (and its cosine's end) come from a
30-step speed probe, or from the config's passes over the text when those end sooner; 5 evals per run over
8,192 val tokens in fixed windows. The table gives the best val loss so far (what best.pt holds) at fractions of
the budget.
"""

import argparse
import collections
import json
import os
import sys
import tarfile
import tempfile
import threading

import sample
import train
from babygpt import charlevel
from babygpt.sampleformat import format_sample
from babygpt.status import read_status
from babygpt import corpora
from babygpt.trainjob import parse_with_train_settings, run_train, timed_train
from configurator import configure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# each shipped model with its recipe's changes to config/finetune_chinese.py: the poetry model already writes this
# kind of poem, and 2e-3 first undoes what it knows (docs/experiments.md), so it takes smaller steps
FINETUNE_BASES = {"pretrained/hlm": [], "pretrained/poetry": ["--learning_rate=3e-4", "--min_lr=3e-5"]}


def songshi_text(tarball, poet="蘇軾"):
    """苏轼's 宋诗 (the dataset writes him 蘇軾) from the chinese-poetry tarball, as data/poetry writes poems (title
    row, the poem's rows, a blank row), in simplified characters: a user's own .txt of some 260k characters."""
    convert, removed, seen, out = corpora.converter("simplified"), collections.Counter(), set(), []
    for _, _, records in corpora.source_files(tarball, ["song"]):
        for rec in records:
            cleaned = rec.get("author") == poet and corpora.clean_poem(rec, "song", removed)
            if cleaned and cleaned[2] not in seen:  # (title, author, body)
                seen.add(cleaned[2])
                out.append(corpora.record(*convert(f"{cleaned[0]}\n{cleaned[2]}").split("\n")))
    return "".join(out)


def guwen_text(tarball):
    """古文观止, the anthology of 222 prose essays (左传 to 明), from the same tarball: each essay's title row, its
    paragraphs a row each, a blank row, in simplified characters; some 140k characters of prose."""
    with tarfile.open(tarball) as tar:
        book = json.load(tar.extractfile("package/dist/mengxue/guwenguanzhi.json"))
    essays = [e["chapter"] + "\n" + "\n".join(e["paragraphs"]) + "\n\n" for part in book["content"] for e in part["content"]]
    return corpora.converter("simplified")("".join(essays))


# texts in neither shipped model's training data, each the size of a user's own text: a poet's poems, and prose
FINETUNE_TEXTS = {"songshi": ("苏轼's 宋诗", songshi_text), "guwen": ("古文观止's prose", guwen_text)}


def run_config(argv):
    """train.py's settings for argv (a config file and --key=value), with a fine-tune's shape from its base."""
    given = set()
    files, overrides = [a for a in argv if not a.startswith("--")], [a for a in argv if a.startswith("--")]
    cfg = configure(train.DEFAULTS, [*files, *overrides], train.__file__, given)
    return train.base_shape(cfg, given)


def steps_per_second(argv, out_dir, env):
    """train.py's speed for argv on one core, from the status.json of a 30-step run (tokens/s over its
    last steps, so start-up is not counted)."""
    run_train([*argv, "--passes=0", "--max_iters=30", "--eval_interval=1000"], out_dir, env=env)
    return read_status(out_dir)["tokens_per_s"] / train.tokens_per_iter(run_config(argv))


FINETUNE_EVAL_TOKENS = 8192  # val tokens per eval, in fixed windows spread over the split: a whole-split eval
                             # would take a tenth of a fine-tune's budget on one core


def budget_run(label, argv, seconds, work, env, evals=6):
    """argv trained for about `seconds` on one core: max_iters (and the cosine's end) from a speed probe, or
    fewer where its config's passes over the text end sooner (a fine-tune as a user runs it), `evals` evals.
    Returns [(seconds, iter, val loss)] per eval."""
    folder = os.path.join(work, label)
    speed = steps_per_second(argv, folder + "-probe", env)
    iters = max(10, int(seconds * speed))
    cfg = run_config(argv)
    if cfg["passes"]:
        n_train = len(train.load_dataset(train.dataset_dir(cfg["dataset"]), cfg["block_size"])[0])
        iters = min(iters, train.steps_for_passes(cfg, n_train))
    batches = -(-FINETUNE_EVAL_TOKENS // (cfg["batch_size"] * cfg["block_size"]))
    every = [f"--eval_iters={batches}", f"--eval_interval={max(1, iters // evals)}", "--log_interval=100000"]
    return timed_train(label, [*argv, "--passes=0", f"--max_iters={iters}", f"--lr_decay_iters={iters}", *every],
                       folder, env)


def finetune_samples(work, labels, n=3, length=120):
    """Unedited samples of each run's best.pt, with their copy report against the run's train.bin."""
    for label in labels:
        folder = os.path.join(work, label.replace(" ", "-").replace("/", "-"))
        cfg = dict(sample.DEFAULTS, out_dir=folder, ckpt="best.pt", device="cpu", num_samples=n, max_new_tokens=length)
        samples = sample.start_samples(cfg, warn=lambda line: None)
        for _ in samples.steps():
            pass
        print(f"\n{label}: python sample.py --out_dir={folder} --ckpt=best.pt --num_samples={n} "
              f"--max_new_tokens={length}")
        print("".join(format_sample(text) + "\n" for text in samples.texts()), end="")
        print("\n".join(samples.copy_report()))


def prepare_text(work, text, tarball, base=None):
    """The text as a user's .txt, prepared as a user would: on its own vocabulary (scratch-data), or with base
    --vocab_from=base (<base>-data; prepare's line on what the base's vocabulary lacked is printed)."""
    text_path = os.path.join(work, "text.txt")
    if not os.path.isfile(text_path):
        with open(text_path, "w", encoding="utf-8") as f:
            f.write(FINETUNE_TEXTS[text][1](tarball))
    if base is None:
        return charlevel.prepare([text_path], os.path.join(work, "scratch-data"), block_size=128, log=lambda *a: None)
    return charlevel.prepare([text_path], os.path.join(work, base.replace("/", "-") + "-data"), block_size=128,
                             log=lambda line: line.startswith("vocabulary:") and print(line, flush=True),
                             vocab_from=os.path.join(ROOT, base))


def run_lanes(lanes, budget, work, env):
    """Each lane's runs one after the other, the lanes side by side (one core each); {label: evals}."""
    runs, failures = {}, []

    def lane(jobs):
        try:
            for label, argv, seconds in jobs:
                runs[label] = budget_run(label.replace(" ", "-").replace("/", "-"), argv, seconds, work, env,
                                         evals=round(5 * seconds / budget))
        except SystemExit as e:  # a thread would swallow the exit
            failures.append(e)
    threads = [threading.Thread(target=lane, args=(jobs,)) for jobs in lanes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        sys.exit(f"error: a run failed ({failures[0]}); runs kept in {work}")
    return runs


def print_table(runs, bases, budget):
    """The best val loss so far of each run at fractions of the budget, and each base against scratch."""
    best = lambda points, seconds: min((v for s, _, v in points if s <= seconds), default=float("nan"))
    print("\nbest val loss so far (what best.pt holds) after ... seconds, one core each")
    marks = [budget / 2, budget, 2 * budget, 4 * budget]
    print(f"{'run':<22}" + "".join(f"{m:>9.0f}" for m in marks))
    for label, points in runs.items():
        print(f"{label:<22}" + "".join(f"{best(points, m):>9.3f}" for m in marks))
    at_budget = best(runs["scratch"], budget * 1.05)  # a run's last eval lands a little after its budget
    for base in bases:
        ours = best(runs[base], budget * 1.05)
        print(f"{base}: {at_budget - ours:+.3f} below scratch at equal time, "
              f"{best(runs['scratch 4x'], 4.2 * budget) - ours:+.3f} below scratch given 4x the time")


def compare(args):
    """Fine-tuning each shipped model on a text of --text against training from scratch on it, one core each:
    lane 1 trains from scratch for 4x the budget while lane 2 trains from scratch, then fine-tunes each base,
    for the budget each."""
    tarball = os.path.join(ROOT, "data", "poetry", corpora.TARBALL)
    bases = [b for b in FINETUNE_BASES if os.path.isfile(os.path.join(ROOT, b, "ckpt.pt"))]
    if not os.path.isfile(tarball) or not bases:
        sys.exit("error: the benchmark needs data/poetry's tarball and a shipped model; run make setup first")
    work = tempfile.mkdtemp(prefix="babygpt-finetune-")
    stats = prepare_text(work, args.text, tarball)
    print(f"text: {FINETUNE_TEXTS[args.text][0]}, {stats['chars']:,} characters, the last 10 % val; "
          f"budget {args.budget:.0f} s per run, one core each", flush=True)
    for base in bases:
        prepare_text(work, args.text, tarball, base)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    scratch = [args.scratch_config, f"--dataset={os.path.join(work, 'scratch-data')}", *args.scratch_args.split()]
    finetune = lambda base: [args.config, f"--dataset={os.path.join(work, base.replace('/', '-') + '-data')}",
                             f"--init_from={os.path.join(ROOT, base)}", *FINETUNE_BASES[base], *args.overrides]
    lanes = [[("scratch 4x", scratch, 4 * args.budget)],
             [("scratch", scratch, args.budget)] + [(base, finetune(base), args.budget) for base in bases]]
    runs = run_lanes(lanes, args.budget, work, env)
    print_table(runs, bases, args.budget)
    finetune_samples(work, list(runs))
    print(f"runs kept in {work}: sample them with python sample.py --out_dir={work}/<run>")


def main():
    p = argparse.ArgumentParser(description="fine-tuning the shipped models against training from scratch")
    p.add_argument("--config", default="config/finetune_chinese.py", help="the fine-tune's recipe")
    p.add_argument("--scratch_config", default="config/train_chinese_cpu.py", help="the from-scratch recipe")
    p.add_argument("--scratch_args", default="--dropout=0.2",
                   help="--key=value settings for the from-scratch runs (without dropout they overfit)")
    p.add_argument("--budget", type=float, default=300, help="seconds of training per run")
    p.add_argument("--text", default="songshi", choices=sorted(FINETUNE_TEXTS),
                   help="songshi (苏轼's 宋诗, the default) or guwen (古文观止's prose essays)")
    # any --key=value this script does not know goes on to train.py for the fine-tunes (--batch_size=16)
    compare(parse_with_train_settings(p))


if __name__ == "__main__":
    main()
