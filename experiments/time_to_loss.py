"""
Time to loss: babygpt's CPU recipe against a baseline recipe, each trained by train.py on the built-in corpus,
to the same val loss, timed from process start.

    python experiments/time_to_loss.py        # config/train_chinese_cpu.py vs nanoGPT's CPU recipe to val 4.57, ~15 min
    python experiments/time_to_loss.py --baseline=experiments/config/baseline_old_demo.py --target=4.42 \
        --max_iters=3600 --lr_decay_iters=3600

train.py runs twice, one run after the other: a baseline config (--baseline, default
experiments/config/baseline_nanogpt_cpu.py: nanoGPT's CPU recipe; experiments/config/baseline_old_demo.py is the
4-layer CPU demo babygpt had before) and --config (default config/train_chinese_cpu.py, with any --key=value).
Each eval is timed from process start to the moment its row appears in the run's log.csv, so start-up, compile,
evals and saves all count, and both runs are evaluated alike: the same fixed val windows, an eval every
EVAL_TOKENS trained tokens. With --repeat=N (default 2) the two recipes run N times, alternated; training is
deterministic, so the runs of one recipe give the same losses (within 0.002) and differ only in time. A busy or
throttled machine only ever adds time, so each eval's fastest time is shown; each alternated pair's ratio shows
the noise. Besides the time to --target, it prints babygpt's val loss at its last eval before the baseline ended.
"""

import argparse
import json
import os
import sys
import tempfile

import train
from babygpt.trainjob import parse_with_train_settings, timed_train
from configurator import configure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EVAL_WINDOWS = 480     # val windows per eval: the same fixed ones for both runs (train.eval_windows)
EVAL_TOKENS = 192_000  # tokens trained between evals, alike for both runs (nanoGPT's eval_interval=250 x 768)


def run_to_loss(label, config, overrides):
    """train.py (with a config file, or None: train.py's defaults) from process start to its end;
    returns [(seconds since start, iteration, val loss)] per eval, read from its log.csv."""
    config = [config] if config else []
    cfg = configure(train.DEFAULTS, [*config, *overrides], train.__file__)
    tokens = train.tokens_per_iter(cfg)
    evals = [f"--eval_iters={max(1, round(EVAL_WINDOWS / cfg['batch_size']))}",
             f"--eval_interval={max(1, EVAL_TOKENS // tokens)}", "--log_interval=100000"]
    with tempfile.TemporaryDirectory() as out_dir:
        return timed_train(label, [*config, *overrides, *evals], out_dir)


def first_below(points, target):
    """Seconds until the first eval at or below target (None if never)."""
    return next((s for s, _, v in points if v <= target), None)


def last_within(points, seconds):
    """The last eval (seconds, iteration, val loss) at or before seconds (None if none)."""
    return next((p for p in reversed(points) if p[0] <= seconds), None)


def fastest(repeats, tolerance=0.002):
    """One recipe's repeated runs -> [(fastest seconds, iteration, val loss)] per eval. The runs must
    agree on every iteration, and on every loss within tolerance (threaded CPU kernels may add floats
    in another order, and thousands of steps can carry that to the 4th decimal): only then is the
    time the one thing that differs. The first run's losses are shown."""
    first = repeats[0]
    for points in repeats[1:]:
        if [it for _, it, _ in points] != [it for _, it, _ in first] or \
                any(abs(v - w) > tolerance for (_, _, v), (_, _, w) in zip(points, first)):
            sys.exit(f"error: two runs of one recipe gave different losses (beyond {tolerance}); "
                     f"training should be deterministic:\n{first}\n{points}")
    return [(min(points[i][0] for points in repeats), it, v) for i, (_, it, v) in enumerate(first)]


def compare(args):
    if not os.path.isfile(os.path.join(ROOT, "data", "chinese", "val.bin")):
        sys.exit("error: the built-in corpus is not prepared; run python data/chinese/prepare.py first")
    repeat = args.repeat
    base_name = os.path.splitext(os.path.basename(args.baseline))[0]
    recipes = {base_name: (args.baseline, []), "babygpt": (args.config, args.overrides)}
    repeats = {name: [] for name in recipes}
    for i in range(repeat):  # alternated, so a slow spell of the machine hits both recipes alike
        for name, (config, overrides) in recipes.items():
            repeats[name].append(run_to_loss(f"{name} ({i + 1}/{repeat})", config, overrides))
    runs = {name: fastest(r) for name, r in repeats.items()}
    times = {name: first_below(points, args.target) for name, points in runs.items()}
    each = {name: [first_below(p, args.target) for p in r] for name, r in repeats.items()}
    if args.json:
        print(json.dumps({"target": args.target, "runs": runs, "seconds_to_target": times, "each_run": each}))
        return
    for name, points in runs.items():
        print(f"\n{name} (fastest of {repeat} runs at each eval)\n{'seconds':>9}{'iter':>7}{'val loss':>10}")
        for s, it, v in points:
            print(f"{s:>9.1f}{it:>7}{v:>10.4f}")
    print(f"\nval loss <= {args.target} (the same {EVAL_WINDOWS} fixed val windows for both), wall time from process start:")
    for name, s in times.items():
        runs_s = ", ".join("never" if t is None else f"{t:.1f}" for t in each[name])
        print(f"  {name:<16}{'never' if s is None else f'{s:.1f} s'}   (each run: {runs_s})")
    base, ours = times[base_name], times["babygpt"]
    if base and ours:
        pairs = ", ".join(f"{b / a:.2f}x" for a, b in zip(each[base_name], each["babygpt"]) if a and b)
        print(f"  babygpt needs {ours / base:.2f}x the time ({base / ours:.2f}x faster); each pair: {pairs}")
    end_s, _, end_loss = runs[base_name][-1]
    same_time = last_within(runs["babygpt"], end_s)
    if same_time:
        print(f"  in the {base_name}'s {end_s:.1f} s (its end, val {end_loss:.4f}): babygpt's last eval, "
              f"{same_time[0]:.1f} s (step {same_time[1]}), val {same_time[2]:.4f}")


def main():
    p = argparse.ArgumentParser(description="babygpt's CPU recipe against a baseline: wall time to a val loss")
    p.add_argument("--config", default="config/train_chinese_cpu.py", help="babygpt's recipe")
    p.add_argument("--baseline", default="experiments/config/baseline_nanogpt_cpu.py",
                   help="the config to compare with (experiments/config/baseline_*.py)")
    p.add_argument("--target", type=float, default=4.57, help="the val loss to reach (nanoGPT's final)")
    p.add_argument("--repeat", type=int, default=2, help="runs of each recipe, alternated")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    # any --key=value this script does not know goes on to train.py for --config's runs (--max_iters=3600)
    compare(parse_with_train_settings(p))


if __name__ == "__main__":
    main()
