"""
Speed benchmarks for babygpt: one function per benchmark, picked with --what. The experiments that compare
recipes (fine-tuning, time to a loss) or measure the poems are scripts of their own in experiments/.

    python bench.py --what=prepare                    # 50M-character corpus, ~15 s a pair of runs
    python bench.py --what=prepare --chars=5000000 --json
    python bench.py --what=sample                     # config/train_chinese.py's size, 10 x 500 chars, ~1 min
    python bench.py --what=sample --threads=1         # on a busy machine: 2 threads crawl on small ops
    python bench.py --what=train                      # config/train_chinese_cpu.py, 30 iterations
    python bench.py --what=train --config=config/train_chinese.py --iters=50 --nproc=2 --json
    python bench.py --what=copy                       # copy report, 10 x 500 vs 535k and 50M tokens, ~15 s
    python bench.py --what=hf_sample                  # the shipped model: babygpt's sampler vs transformers', ~1 min
    python bench.py --what=serve --run=pretrained/hlm # characters/s through serve.py at 1, 4, 8 and 16 clients

prepare: charlevel.py (streaming, vectorized) against the dict-lookup list comprehension
of nanoGPT's shakespeare_char/prepare.py, on the same synthetic Chinese corpus. Each method runs
in its own child process, so each peak-memory figure (the child's max RSS) is its own. --repeat pairs run, and
the pair with the median ratio is shown.

sample: sample.py's default work (10 samples x 500 characters) through sample.py's own generator
(start_samples), with a model the size of config/train_chinese.py's (9 layers, 12 heads, 384 dims,
block 256, vocabulary 4,506; random weights: speed does not depend on them), on the CPU. The reference (no cache, one sample at a time, nanoGPT's way) is timed on one sample
and multiplied by the number of samples, as its cost is linear in them; babygpt's way (KV cache,
all samples in one batch) is timed on the whole work.

train: train.py itself (so what is timed is what users run) on a config, for --iters steps on
random tokens of the 红楼梦 vocabulary size, as frequent as in text (Zipf); tokens/s is the one
train.py's status.json ends with (the median of its last 11 steps: run more than 11 after the 5
warm-up ones), ms/iter follows from it, MFU is train.py's formula (against an A100's 312 TFLOPS).
--nproc=N adds a torchrun run with N processes beside the 1-process one.

copy: sample.py's copy report (copycheck.copy_stats and its lines) for 10 samples x 500 characters,
against the built-in corpus' train.bin (535k tokens) and a synthetic 50M-token train.bin of 红楼梦's
lines shuffled (every passage ~94 times), both page-cached. Half the samples are pieces of 2-30
characters cut from the training text and pasted together (an overfit model), half are shuffled
training text (a model that copies nothing, whose longest copies are short: the slower path).
The median of --repeat runs is shown.
hf_sample: the shipped model (pretrained/hlm) exported by hfexport.py; 1 sample, then 10, of block_size minus
the prompt's characters (127 after sample.py's "\n"), sampled (temperature 0.8, top_k 200) by babygpt's sampler
(sample.py's generator: KV cache, one batch) and by transformers' generate (its own KV cache, one batch), on the
CPU in float32, alternated --repeat times; the fastest of each, as characters per second and babygpt's over
transformers'. Then babygpt's mean decode step (its time / characters) against a floor: the step's FLOPs at the
mean context (decode_step_flops) at this CPU's matmul speed, measured in the same run on a matrix holding as
many weights as the model's matmuls (matmul_flops_per_s): the time the step's arithmetic alone would take.
serve: serve.py over --run on a free localhost port; 1, then 4, 8 and 16 clients (threads of this process, on the
same machine) each stream a completion of --max_new_tokens characters from a newline, all started at once, read
as raw Server-Sent Events; characters received per second of wall time (the fastest of --repeat rounds), and that
against one client's.
"""

import argparse
import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.abspath(__file__))


def write_meta(path, chars, n_train, n_val):
    """meta.pkl for a vocabulary of chars (ids in their order) through charlevel's writer, the one prepare uses."""
    import numpy as np
    from babygpt import charlevel
    charlevel.write_meta(path, np.array([ord(c) for c in chars]), np.uint16, n_train, n_val)


def peak_rss_mb():
    """This process's peak resident memory in MB. Linux: VmHWM, which starts afresh at exec;
    ru_maxrss would also count the parent's memory at fork. Elsewhere: ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except OSError:
        import resource  # Unix only; imported here so other benchmarks still run on Windows
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


# -----------------------------------------------------------------------------
# prepare

def builtin_text():
    """The built-in corpus as data/chinese/prepare.py cleans it."""
    from data.chinese import prepare as chinese  # its main() is behind __name__ == "__main__"
    return chinese.clean(chinese.read_builtin_corpus())


def make_chinese_corpus(path, n_chars, seed=1337):
    """Shuffle the built-in corpus' lines, again and again, until there are n_chars characters."""
    lines = builtin_text().split("\n")
    rng, parts, total = random.Random(seed), [], 0
    while total < n_chars:
        rng.shuffle(lines)
        parts.append("\n".join(lines) + "\n")
        total += len(parts[-1])
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("".join(parts)[:n_chars])


def prepare_baseline(corpus, out_dir):
    """nanoGPT's way: whole text in memory, a dict lookup per character, then np.array."""
    import numpy as np
    with open(corpus, encoding="utf-8") as f:
        data = f.read()
    chars = sorted(set(data))
    stoi = {ch: i for i, ch in enumerate(chars)}
    n = len(data)
    train_ids = [stoi[c] for c in data[:int(n * 0.9)]]
    val_ids = [stoi[c] for c in data[int(n * 0.9):]]
    np.array(train_ids, dtype=np.uint16).tofile(os.path.join(out_dir, "train.bin"))
    np.array(val_ids, dtype=np.uint16).tofile(os.path.join(out_dir, "val.bin"))
    # nanoGPT's own meta.pkl lines, not babygpt's writer: they are part of what the baseline times
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}
    with open(os.path.join(out_dir, "meta.pkl"), "wb") as f:
        pickle.dump(meta, f)


def prepare_charlevel(corpus, out_dir, val_fraction=0.1):
    from babygpt import charlevel
    charlevel.prepare([corpus], out_dir, val_fraction=val_fraction, log=lambda *a: None)


PREPARE_METHODS = {"baseline": prepare_baseline, "charlevel": prepare_charlevel}


def prepare_child(method, corpus, out_dir):
    """Runs in the child: time one method (imports done first) and report time and peak RSS."""
    import numpy  # noqa: F401  both methods need it; keep its import out of the timing
    t0 = time.perf_counter()
    PREPARE_METHODS[method](corpus, out_dir)
    print(json.dumps({"seconds": time.perf_counter() - t0, "peak_mb": peak_rss_mb()}))


def run_prepare_child(method, corpus, out_dir):
    os.makedirs(out_dir)
    cmd = [sys.executable, os.path.abspath(__file__), "--what=prepare", f"--child={method}",
           f"--corpus={corpus}", f"--out_dir={out_dir}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: {method} child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def same_outputs(dir_a, dir_b):
    """Both methods must write byte-identical .bin files, or the speed comparison is moot."""
    def read(d, name):
        with open(os.path.join(d, name), "rb") as f:
            return f.read()
    return all(read(dir_a, n) == read(dir_b, n) for n in ("train.bin", "val.bin"))


def prepare_pair(corpus, out_dir):
    """One baseline run, then one charlevel run, each in a fresh child. Earlier pairs' outputs
    are kept (200 MB each): deleting them would hand the next pair freshly freed page-cache
    pages, cheaper to write than the first pair's, and the pairs would not be alike."""
    results = {m: run_prepare_child(m, corpus, os.path.join(out_dir, m)) for m in PREPARE_METHODS}
    results["identical"] = same_outputs(os.path.join(out_dir, "baseline"), os.path.join(out_dir, "charlevel"))
    results["speedup"] = results["baseline"]["seconds"] / results["charlevel"]["seconds"]
    return results


def printed_json(args, summary):
    """With --json, print the figures as one JSON line (and the caller prints no table)."""
    if args.json:
        print(json.dumps(summary))
    return args.json


def bench_prepare(args):
    repeat = args.repeat
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        make_chinese_corpus(corpus, args.chars)
        mb = os.path.getsize(corpus) / 1e6
        pairs = [prepare_pair(corpus, os.path.join(tmp, f"pair{i}")) for i in range(repeat)]
    # the pair with the median ratio, not medians taken apart: time and memory stay one run's
    mid = sorted(pairs, key=lambda p: p["speedup"])[len(pairs) // 2]
    base, ours = mid["baseline"], mid["charlevel"]
    identical = all(p["identical"] for p in pairs)
    summary = {"chars": args.chars, "corpus_mb": round(mb, 1), "identical_outputs": identical,
               "baseline": base, "charlevel": ours, "speedup": mid["speedup"],
               "memory_ratio": ours["peak_mb"] / base["peak_mb"], "repeat": repeat,
               "speedups": [round(p["speedup"], 2) for p in pairs]}
    if printed_json(args, summary):
        return
    print(f"prepare on {args.chars:,} Chinese characters ({mb:.0f} MB UTF-8); "
          f"outputs identical: {identical}")
    if repeat > 1:
        print(f"{repeat} pairs, ratios " + ", ".join(f"{p['speedup']:.1f}x" for p in pairs)
              + "; the pair with the median ratio:")
    print(f"{'method':<34}{'time':>9}{'peak RSS':>11}")
    print(f"{'nanoGPT dict-lookup list comp':<34}{base['seconds']:>8.2f}s{base['peak_mb']:>8.0f} MB")
    print(f"{'charlevel (streaming, numpy)':<34}{ours['seconds']:>8.2f}s{ours['peak_mb']:>8.0f} MB")
    print(f"charlevel is {summary['speedup']:.1f}x faster and uses "
          f"{summary['memory_ratio']:.2f}x the peak memory")


# -----------------------------------------------------------------------------
# sample

def write_random_run(run_dir, vocab_size=4506):
    """A run folder sample.py reads: a seed-size GPT with random weights (speed does not depend on them)
    and a vocabulary of vocab_size characters, '\\n' (sample.py's default prompt) among them."""
    import torch
    from babygpt.checkpoint import checkpoint_dict, save_checkpoint, saved_model_args
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=9, n_head=12, n_embd=384, block_size=256, vocab_size=vocab_size, dropout=0.0))
    save_checkpoint(run_dir, checkpoint_dict(model.state_dict(), saved_model_args(model.config), 0, 0.0,
                                             {"dataset": run_dir}))
    chars = ["\n"] + [chr(0x4E00 + i) for i in range(vocab_size - 1)]
    write_meta(os.path.join(run_dir, "meta.pkl"), chars, 0, 0)  # no dataset behind the run: no tokens


def time_samples(cfg):
    """Seconds sample.py's generator takes to write cfg's samples (the model already loaded)."""
    import sample
    samples = sample.start_samples(cfg, warn=lambda line: None)
    t0 = time.perf_counter()
    for _ in samples.steps():
        pass
    return time.perf_counter() - t0


def bench_sample(args):
    import torch
    import sample
    if args.threads:
        torch.set_num_threads(args.threads)  # both paths run with the same count
    n, new = args.num_samples, args.max_new_tokens
    with tempfile.TemporaryDirectory() as run_dir:
        write_random_run(run_dir)
        cfg = dict(sample.DEFAULTS, out_dir=run_dir, device="cpu", dtype="float32", copy_report=False)
        time_samples(dict(cfg, num_samples=1, max_new_tokens=8))  # warm-up: first calls allocate and pick kernels
        ref_one = time_samples(dict(cfg, num_samples=1, max_new_tokens=new, kv_cache=False))
        ours = time_samples(dict(cfg, num_samples=n, max_new_tokens=new))
    summary = {"threads": torch.get_num_threads(), "num_samples": n, "max_new_tokens": new,
               "reference_one_sample_s": ref_one, "reference_all_s": ref_one * n,
               "kv_cache_batched_s": ours, "speedup": ref_one * n / ours}
    if printed_json(args, summary):
        return
    print(f"sample: {n} x {new} characters through sample.py's generator, a 9x12x384 model (block 256, "
          f"vocab 4,506), CPU, {summary['threads']} threads")
    print(f"{'method':<48}{'time':>9}")
    print(f"{'reference: no cache, one sample (measured)':<48}{ref_one:>8.2f}s")
    print(f"{f'reference: no cache, {n} samples (x{n})':<48}{ref_one * n:>8.2f}s")
    print(f"{f'KV cache, {n} samples in one batch (measured)':<48}{ours:>8.2f}s")
    print(f"KV cache + batch is {summary['speedup']:.1f}x faster")


# -----------------------------------------------------------------------------
# train

TRAIN_WARMUP = 5  # iterations left out of the timing: compilation, allocator and cache warm-up


def write_random_dataset(folder, vocab_size, n_tokens=1_000_000, seed=1337):
    """Random tokens train as fast as text, if drawn as often as text uses them: Zipf's law (the
    i-th most frequent token has weight 1/i), so an adaptive head meets a text-like share of rare ones."""
    import numpy as np
    os.makedirs(folder)
    weights = 1.0 / np.arange(1, vocab_size + 1)
    ids = np.random.default_rng(seed).choice(vocab_size, n_tokens, p=weights / weights.sum()).astype(np.uint16)
    ids[:n_tokens * 9 // 10].tofile(os.path.join(folder, "train.bin"))
    ids[n_tokens * 9 // 10:].tofile(os.path.join(folder, "val.bin"))
    write_meta(os.path.join(folder, "meta.pkl"), [chr(0x4E00 + i) for i in range(vocab_size)],
               n_tokens * 9 // 10, n_tokens - n_tokens * 9 // 10)


def run_train(args, data, out_dir, nproc):
    """train.py on args.config for TRAIN_WARMUP + args.iters steps; its speed read from out_dir/status.json
    (the median of its last steps), not from its printed lines."""
    import train
    from babygpt.status import read_status
    from babygpt.trainjob import run_train as train_py
    train_py([args.config, f"--dataset={data}", f"--max_iters={TRAIN_WARMUP + args.iters}", "--log_interval=1",
              "--eval_iters=1", f"--eval_interval={10 ** 9}", "--always_save_checkpoint=False", *args.overrides],
             out_dir, nproc)
    tokens = train.tokens_per_iter(train_config([args.config], args.overrides))
    ms_per_iter = tokens / read_status(out_dir)["tokens_per_s"] * 1000
    mfu = config_model(args).estimate_mfu(tokens // nproc, ms_per_iter / 1000)  # one process's share
    return {"nproc": nproc, "tokens_per_iter": tokens, "ms_per_iter": ms_per_iter,
            "tokens_per_s": tokens / (ms_per_iter / 1000), "mfu_percent": mfu * 100}


def train_config(files, overrides, given=None):
    """train.py's settings for config files and --key=value overrides, as train.py itself reads them
    (given receives the keys they set)."""
    import train
    from configurator import configure
    return configure(train.DEFAULTS, [*files, *overrides], train.__file__, given)


def config_model(args):
    """The GPT that args.config (with its overrides) describes, for its FLOPs per token."""
    from model import GPT, GPTConfig
    from babygpt.finetune import model_args_for
    cfg = train_config([args.config], args.overrides)
    return GPT(GPTConfig(**model_args_for(cfg, args.vocab_size)))


def bench_train(args):
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        write_random_dataset(data, args.vocab_size)
        runs = [run_train(args, data, os.path.join(tmp, "out1"), 1)]
        if args.nproc > 1:
            runs.append(run_train(args, data, os.path.join(tmp, f"out{args.nproc}"), args.nproc))
    summary = {"config": args.config, "overrides": args.overrides, "iters": args.iters, "runs": runs}
    if printed_json(args, summary):
        return
    print(f"train.py {args.config} {' '.join(args.overrides)}: median of {args.iters} iterations "
          f"after {TRAIN_WARMUP} warm-up ones")
    print(f"{'processes':<11}{'tokens/iter':>12}{'ms/iter':>10}{'tokens/s':>11}{'MFU':>11}")
    for r in runs:
        print(f"{r['nproc']:<11}{r['tokens_per_iter']:>12,}{r['ms_per_iter']:>10.1f}"
              f"{r['tokens_per_s']:>11,.0f}{r['mfu_percent']:>10.3g}%")


# -----------------------------------------------------------------------------
# copy

def copy_samples(train, n, length, seed=1337):
    """n samples of length tokens: the first half pasted together from 2-30-token pieces of train,
    the second half shuffled stretches of it (see the docstring)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        if i < n // 2:
            starts, sizes = rng.integers(0, len(train) - 30, length), rng.integers(2, 31, length)
            pieces = np.concatenate([train[a:a + s] for a, s in zip(starts, sizes)])
            samples.append(pieces[:length])
        else:
            a = int(rng.integers(0, len(train) - length))
            samples.append(rng.permutation(train[a:a + length]))
    return [s.tolist() for s in samples]


def time_copy_report(train_bin, samples, decode, repeat):
    """Median seconds of the report as sample.py makes it: copy_stats over the memmap, then its lines."""
    import numpy as np
    from babygpt import copycheck
    corpus = np.memmap(train_bin, dtype=np.uint16, mode="r")
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        copies = copycheck.copy_stats(corpus, samples)
        lines = [copycheck.report_line(i, c, s, decode, "characters") for i, (c, s) in enumerate(zip(copies, samples))]
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], len(corpus), [c.length for c in copies], lines


def bench_copy(args):
    import numpy as np
    from babygpt.checkpoint import codec, load_meta
    with tempfile.TemporaryDirectory() as tmp:
        builtin, big = os.path.join(tmp, "builtin"), os.path.join(tmp, "big")
        with open(os.path.join(tmp, "hlm.txt"), "w", encoding="utf-8", newline="") as f:
            f.write(builtin_text())
        prepare_charlevel(os.path.join(tmp, "hlm.txt"), builtin)  # what data/chinese/prepare.py writes
        # 1% validation: the train.bin is then just over args.big_tokens
        make_chinese_corpus(os.path.join(tmp, "big.txt"), int(args.big_tokens / 0.99) + 1)
        prepare_charlevel(os.path.join(tmp, "big.txt"), big, val_fraction=0.01)
        train = np.fromfile(os.path.join(builtin, "train.bin"), dtype=np.uint16)
        samples = copy_samples(train, args.num_samples, args.max_new_tokens)
        _, decode = codec(load_meta(os.path.join(builtin, "meta.pkl")))
        runs = {name: time_copy_report(os.path.join(folder, "train.bin"), samples, decode, args.repeat)
                for name, folder in (("builtin", builtin), ("synthetic", big))}
    summary = {name: {"tokens": n, "seconds": s, "longest": longest} for name, (s, n, longest, _) in runs.items()}
    if printed_json(args, summary):
        return
    print(f"copy report: {args.num_samples} samples x {args.max_new_tokens} characters (the first half pasted from "
          f"2-30-character pieces of train.bin, the rest shuffled), median of {args.repeat}")
    print(f"{'train.bin':<40}{'tokens':>12}{'time':>9}   longest copies")
    for label, name in (("built-in corpus", "builtin"), ("synthetic: its lines shuffled, repeated", "synthetic")):
        r = summary[name]
        print(f"{label:<40}{r['tokens']:>12,}{r['seconds']:>8.2f}s   {r['longest']}")
    print("first line against the built-in corpus: " + runs["builtin"][3][0])


# -----------------------------------------------------------------------------
# hf_sample

def time_hf_generate(model, ids):
    """Seconds transformers' generate takes to fill the context from ids (n, T), as generation_config.json says."""
    import torch
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids))
    assert out.size(1) == model.config.n_positions, "generate should stop at the context"
    return time.perf_counter() - t0


def decode_step_flops(config, batch, context):
    """FLOPs of one decode step: batch rows, each one new token attending to context cached ones.
    Per row and layer: 2 x 12 C^2 for the weights (c_attn 3C^2, c_proj C^2, c_fc 4C^2, mlp c_proj 4C^2), 2 x 2 C T
    for attention (q.k over T keys, then the weighted sum of T values); then 2 C V for the head. LayerNorm,
    GELU, softmax and the sampler are left out: a handful of operations per number, against C per weight."""
    C, L, V = config.n_embd, config.n_layer, config.vocab_size
    return batch * (L * (24 * C * C + 4 * C * context) + 2 * C * V)


def matmul_flops_per_s(config, batch, repeat=20):
    """This CPU's speed at the step's kind of work, measured now: (batch, C) rows through one weight holding as
    many numbers as the model's matmuls (12 L C^2 + V C), so it reads as much memory as a step, with each of
    decodestep's layouts (the transposed weight, oneDNN's packed one); the fastest of repeat, best layout."""
    import torch
    from babygpt.decodestep import Linear, onednn_works
    C = config.n_embd
    w = torch.randn(12 * config.n_layer * C + config.vocab_size, C)  # (N, C), as a Linear holds it
    x = torch.randn(batch, C)  # (B, C)
    best = float("inf")
    for kind in ("transposed", "packed") if onednn_works() else ("transposed",):
        linear = Linear(w, None, kind)
        for i in range(repeat + 3):  # 3 to warm up
            t0 = time.perf_counter()
            linear(x)  # (B, N)
            if i >= 3:
                best = min(best, time.perf_counter() - t0)
    return 2 * batch * w.numel() / best


def time_forward_steps(model, n, steps, repeat):
    """Seconds per step of the model's one-token forward alone (what engine.generate_tokens runs, decodestep's
    where it applies), n rows, over steps steps after a one-token prompt; the fastest of repeat."""
    import torch
    from babygpt.decodestep import decode_step
    from babygpt.engine import next_logits
    step, idx, best = decode_step(model, n), torch.zeros((n, 1), dtype=torch.long), float("inf")
    with torch.inference_mode():
        for _ in range(repeat):
            cache = next_logits(model, idx, None, True, step)[1]  # the one-token prompt
            t0 = time.perf_counter()
            for _ in range(steps):
                next_logits(model, idx, cache, True, step)  # (n, vocab)
            best = min(best, (time.perf_counter() - t0) / steps)
    return best


def time_hf_pair(cfg, hf, ids, repeat):
    """babygpt's sampler and transformers' generate on the same rows ids (n, T), alternated repeat times (a slow
    spell of the shared machine hits both); the fastest seconds of each."""
    n = ids.size(0)
    time_samples(dict(cfg, num_samples=n, max_new_tokens=8))  # warm-up: first calls allocate and pick kernels
    time_hf_generate(hf, ids)
    times = {"babygpt": [], "transformers": []}
    for _ in range(repeat):
        times["babygpt"].append(time_samples(dict(cfg, num_samples=n)))
        times["transformers"].append(time_hf_generate(hf, ids))
    return {k: min(v) for k, v in times.items()}


def bench_hf_sample(args):
    import torch
    import hfexport
    import sample
    from babygpt.checkpoint import load_meta
    from transformers import AutoModelForCausalLM
    if args.threads:
        torch.set_num_threads(args.threads)
    shipped, rows = os.path.join(ROOT, "pretrained", "hlm"), {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = hfexport.export(dict(hfexport.DEFAULTS, out_dir=shipped, hf_dir=os.path.join(tmp, "hlm"), samples=0),
                                 warn=lambda line: None)
        hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    block, prompt = hf.config.n_positions, sample.DEFAULTS["start"]
    new = block - len(prompt)
    cfg = dict(sample.DEFAULTS, out_dir=shipped, device="cpu", dtype="float32", copy_report=False, max_new_tokens=new)
    model = sample.load_model("resume", shipped, "cpu", warn=lambda line: None)[0].eval()
    for n in (1, 10):
        ids = torch.full((n, len(prompt)), load_meta(os.path.join(shipped, "meta.pkl"))["stoi"][prompt])  # (n, 1)
        r = rows[n] = time_hf_pair(cfg, hf, ids, args.repeat)
        r["chars_per_s"] = {k: n * new / s for k, s in list(r.items())}
        # the mean step sees len(prompt) + new / 2 cached tokens
        r["floor_s"] = decode_step_flops(model.config, n, len(prompt) + new // 2) / matmul_flops_per_s(model.config, n)
        r["step_s"] = r["babygpt"] / new  # everything per character: forward, sampler, text
        r["forward_s"] = time_forward_steps(model, n, new - 1, args.repeat)
    if printed_json(args, {"threads": torch.get_num_threads(), "new_characters": new, "rows": rows}):
        return
    print(f"pretrained/hlm exported: {new} new characters per sample, CPU float32, "
          f"{torch.get_num_threads()} threads, fastest of {args.repeat}")
    print(f"{'samples':<9}{'babygpt':>15}{'transformers':>15}{'ratio':>7}{'step':>10}{'forward':>10}{'floor':>10}"
          f"  forward/floor")
    for n, r in rows.items():
        c = r["chars_per_s"]
        print(f"{n:<9}{c['babygpt']:>9.0f} chr/s{c['transformers']:>9.0f} chr/s{c['babygpt'] / c['transformers']:>6.2f}x"
              f"{r['step_s'] * 1e3:>7.2f} ms{r['forward_s'] * 1e3:>7.2f} ms{r['floor_s'] * 1e3:>7.2f} ms"
              f"  {r['forward_s'] / r['floor_s']:.1f}x")


# -----------------------------------------------------------------------------
# serve

def start_server(run_dir):
    """python serve.py on a free localhost port, as a user starts it; (process, base URL) once it answers."""
    import socket
    import httpx
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "serve.py"), f"--out_dir={run_dir}", f"--port={port}",
                             "--max_queue=64", "--max_batch=32"], cwd=ROOT)
    url, deadline = f"http://127.0.0.1:{port}/v1", time.time() + 120
    while True:
        try:
            return proc, url, httpx.get(f"{url}/models", timeout=5).json()["data"][0]["id"]
        except (httpx.HTTPError, ValueError, KeyError):
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                sys.exit(f"serve.py did not start for --run={run_dir}")
            time.sleep(0.3)


def stream_chars(url, model, seed, length):
    """One client: a streamed completion of length characters, read as raw Server-Sent Events; the characters."""
    import httpx
    body = {"model": model, "prompt": "\n", "max_tokens": length, "seed": seed, "stream": True}
    got = 0
    with httpx.stream("POST", f"{url}/completions", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                got += sum(len(c["text"]) for c in json.loads(line[len("data: "):])["choices"])
    return got


def bench_serve(args):
    from concurrent.futures import ThreadPoolExecutor
    proc, url, model = start_server(args.run)
    rows = {}
    try:
        stream_chars(url, model, 0, 8)  # warm-up: first calls allocate and pick kernels
        for _ in range(args.repeat):  # rounds of every client count, so a slow spell of the machine hits all
            for n in (1, 4, 8, 16):
                t0 = time.perf_counter()
                with ThreadPoolExecutor(n) as pool:  # all clients at once: the server batches what arrives together
                    chars = sum(pool.map(lambda seed: stream_chars(url, model, seed, args.max_new_tokens), range(n)))
                seconds = time.perf_counter() - t0
                if n not in rows or seconds < rows[n]["seconds"]:
                    rows[n] = {"characters": chars, "seconds": seconds}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if printed_json(args, {"run": args.run, "max_tokens": args.max_new_tokens, "clients": rows}):
        return
    print(f"serve.py --out_dir={args.run}: each client streams {args.max_new_tokens} characters, "
          f"clients and server on this machine")
    print(f"{'clients':<9}{'characters':>11}{'seconds':>9}{'chars/s':>9}   x one client")
    for n, r in rows.items():
        speed = r["characters"] / r["seconds"]
        print(f"{n:<9}{r['characters']:>11,}{r['seconds']:>9.2f}{speed:>9.0f}   "
              f"{speed / (rows[1]['characters'] / rows[1]['seconds']):.2f}x")


# -----------------------------------------------------------------------------

BENCHMARKS = {"copy": bench_copy, "hf_sample": bench_hf_sample, "prepare": bench_prepare,
              "sample": bench_sample, "serve": bench_serve, "train": bench_train}


def main():
    p = argparse.ArgumentParser(description="babygpt benchmarks")
    p.add_argument("--what", choices=sorted(BENCHMARKS), required=True, help="which benchmark")
    p.add_argument("--chars", type=int, default=50_000_000, help="prepare: corpus size")
    p.add_argument("--num_samples", type=int, default=10, help="sample, copy: samples in the work")
    p.add_argument("--run", default="pretrained/poetry", help="serve: the run or shipped model to serve")
    p.add_argument("--max_new_tokens", type=int, default=500, help="sample, copy: characters per sample; serve: "
                   "per client")
    p.add_argument("--big_tokens", type=int, default=50_000_000, help="copy: the synthetic train.bin's size")
    p.add_argument("--repeat", type=int, default=3,
                   help="copy: runs timed (the median is shown); prepare: pairs of runs (the median ratio's pair is "
                        "shown); hf_sample: alternated runs of each, serve: rounds of all client counts (the fastest is shown)")
    p.add_argument("--threads", type=int, default=0,
                   help="sample, hf_sample: torch threads (default: torch's choice); 1 on a shared, busy CPU")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    p.add_argument("--config", default="config/train_chinese_cpu.py", help="train: the config to time")
    p.add_argument("--iters", type=int, default=30, help="train: iterations timed (after 5 warm-up ones)")
    p.add_argument("--nproc", type=int, default=1, help="train: also time N processes under torchrun")
    p.add_argument("--vocab_size", type=int, default=4506, help="train: vocabulary (4,506: 红楼梦's)")
    # internal: bench_prepare re-runs this script as a child, one method per process
    p.add_argument("--child", choices=sorted(PREPARE_METHODS), help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--out_dir", help=argparse.SUPPRESS)
    # train: any --key=value that bench.py does not know goes on to train.py (--batch_size=8)
    args, args.overrides = p.parse_known_args()
    unknown = [o for o in args.overrides if not (args.what == "train" and o.startswith("--"))]
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.child:
        prepare_child(args.child, args.corpus, args.out_dir)
    else:
        BENCHMARKS[args.what](args)


if __name__ == "__main__":
    main()
