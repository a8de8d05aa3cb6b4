"""
The copy report: how much of each sample is copied verbatim from the run's training text.
sample.py prints it on stderr after the samples, one line per sample; importing this module runs nothing.

    python sample.py --out_dir=out-chinese                      # samples on stdout, the report on stderr
    python sample.py --out_dir=out-chinese --copy_report=False  # no report
    python bench.py --what=copy                                 # its speed on 535k and 50M tokens

For each sample it finds
- the longest passage that occurs verbatim in train.bin, where it starts in the sample and in train.bin
  (a token offset, which is a character offset in a char-level run). It is exact: the passage with one more
  token on either side occurs nowhere in train.bin;
- the share of the sample's WINDOW-token windows that occur somewhere in train.bin.
Only the generated tokens are compared, not the prompt: the prompt is the user's text, and a prompt cut
from the novel (--start=FILE:chapter.txt) would otherwise read as memorisation. Windows that straddle the
prompt and the continuation are left out for the same reason.

How, with no Python loop over the corpus: every k-token window of train.bin gets a polynomial hash mod
2**32, computed in place, CHUNK windows at a time (so memory does not grow with train.bin). A table of
2**20 flags, set from the samples' window hashes, picks candidate positions; a candidate whose hash equals
a sample window's is compared token by token, so a hash collision costs time, never a wrong answer.
Verified WINDOW-token matches at (corpus p, sample q), (p+1, q+1), ... are one copied passage, maximal
because the windows one step before and after did not match. A sample with no WINDOW-token match gets
its longest shorter one by growing its 6-token matches to the right, token by token; without any, from
3 tokens, and so on (SEEDS). The hashes step down from k to k-1 tokens in place: minus the last token,
times the inverse of the (odd) multiplier.
"""

import os
from collections import namedtuple

import numpy as np

from babygpt.checkpoint import META_NAME, dataset_file, load_checkpoint, load_meta, token_dtype
from babygpt.errors import UserError

WINDOW = 10              # the report's window: the share of the sample's 10-token windows found in train.bin
CHUNK = 1 << 23          # corpus windows hashed at a time: ~100 MB of work arrays, whatever train.bin's size
MAX_TOKENS = 1 << 28     # 268M: a larger train.bin (openwebtext's 9B) would take minutes, so it is skipped
SHOWN = 12               # characters of the copied passage quoted in the report
_MUL = np.uint32(0x9E3779B1)                       # odd (Knuth's golden-ratio constant): invertible mod 2**32
_INV = np.uint32(pow(0x9E3779B1, -1, 1 << 32))     # so _down can undo _up
_BITS = 20               # the candidate table: 2**20 flags (1 MB, stays in cache), indexed by a hash's top bits
# copies shorter than WINDOW: grown from 6-token matches, for samples with none from 3, then 2, then 1.
# Fewer tokens match more places (3: millions in 50M tokens of fluent text), so small seeds come last.
SEEDS = (6, 3, 2, 1)

# length: of the longest copied passage (0: no token of the sample is in train.bin);
# sample_pos, corpus_pos: where it starts (-1 when length is 0); windows_found of windows
Copy = namedtuple("Copy", "length sample_pos corpus_pos windows_found windows")


class NoReport(Exception):
    """Why there is no copy report; sample.py shows it as one note line and exits 0."""


# -----------------------------------------------------------------------------
# finding the longest copies

def _window_hashes(tokens, k):
    """Hash of every k-token window of a uint32 array: the function _up computes for the corpus."""
    n = max(len(tokens) - k + 1, 0)
    h = np.zeros(n, np.uint32)
    for j in range(k):
        h *= _MUL
        h += tokens[j:j + n]
    return h


def _up(h, tokens, k):
    """In place: hashes of the (k-1)-token windows starting at 0..len(h)-1 -> of the k-token windows.
    Windows that run past the tokens count the missing ones as 0 (the check in _matches drops them)."""
    h *= _MUL
    tail = tokens[k - 1:k - 1 + len(h)]
    h[:len(tail)] += tail


def _down(h, tokens, k):
    """In place, the inverse of _up: hashes of the k-token windows -> of the (k-1)-token windows."""
    tail = tokens[k - 1:k - 1 + len(h)]
    h[:len(tail)] -= tail
    h *= _INV


def _hashed_chunks(corpus, k):
    """(start, tokens, h) per CHUNK of window starts: tokens from start, WINDOW - 1 past the chunk
    (a window may end there), and h, the hashes of the k-token windows starting in the chunk."""
    for start in range(0, len(corpus), CHUNK):
        tokens = np.array(corpus[start:start + CHUNK + WINDOW - 1])  # one read from the memmap
        h = np.array(tokens[:min(CHUNK, len(corpus) - start)], dtype=np.uint32)  # k = 1: the token itself
        for j in range(2, k + 1):
            _up(h, tokens, j)
        yield start, tokens, h


def _queries(flat, bounds, active, k):
    """The k-token windows of the samples in active, looked up by hash: (flags, sorted hashes, their
    positions in flat). flags[hash >> (32 - _BITS)] is False for most corpus windows, which ends their check."""
    pos = np.concatenate([np.arange(bounds[s], bounds[s + 1] - k + 1) for s in active])
    h = np.concatenate([_window_hashes(flat[bounds[s]:bounds[s + 1]], k) for s in active])
    order = np.argsort(h, kind="stable")
    flags = np.zeros(1 << _BITS, bool)
    flags[h >> (32 - _BITS)] = True
    return flags, h[order], pos[order]


def _matches(h, tokens, start, k, queries, flat):
    """(corpus positions, flat sample positions) of every k-token window of this chunk that equals a
    sample window, checked token by token."""
    flags, qh, qpos = queries
    cand = np.flatnonzero(flags[h >> (32 - _BITS)])
    hc = h[cand]
    lo, hi = np.searchsorted(qh, hc, "left"), np.searchsorted(qh, hc, "right")
    cand, lo, count = cand[hi > lo], lo[hi > lo], (hi - lo)[hi > lo]
    # one row per (corpus window, sample window with the same hash): a window a sample repeats has several
    p = np.repeat(cand, count)
    q = qpos[np.repeat(lo - np.cumsum(count) + count, count) + np.arange(count.sum())]
    keep = p + k <= len(tokens)  # windows past the end of train.bin were hashed with zeros
    p, q = p[keep], q[keep]
    for j in range(k):  # drops hash collisions
        same = tokens[p + j] == flat[q + j]
        p, q = p[same], q[same]
    return p + start, q


def _passages(p, q, k):
    """Maximal copied passages from all verified k-token matches (p, q): matches at (p, q), (p+1, q+1), ...
    are one passage. Returns (length, q0, p0) arrays, one entry per passage."""
    diagonal = p.astype(np.int64) - q
    order = np.lexsort((q, diagonal))  # by diagonal, then along it
    p, q, diagonal = p[order], q[order], diagonal[order]
    first = np.ones(len(p), bool)
    first[1:] = (diagonal[1:] != diagonal[:-1]) | (q[1:] != q[:-1] + 1)
    starts = np.flatnonzero(first)
    runs = np.diff(np.append(starts, len(p)))
    return runs + k - 1, q[starts], p[starts]


def _keep_best(best, bounds, length, q, p):
    """best[s] = (length, q, p) of sample s's longest passage; ties go to the earliest in the sample, then
    in the corpus, so the answer does not depend on how train.bin was cut into chunks."""
    sample = np.searchsorted(bounds, q, "right") - 1
    order = np.lexsort((p, q, -length, sample))  # each sample's best passage first
    _, first = np.unique(sample[order], return_index=True)
    for i in order[first]:
        s = sample[i]
        new = (int(length[i]), int(q[i] - bounds[s]), int(p[i]))
        if (-new[0], new[1], new[2]) < (-best[s][0], best[s][1], best[s][2]):
            best[s] = new


def _grow(tokens, start, flat, bounds, p, q, k, most):
    """The length of each verified k-token match (p, q) grown to the right, token by token, up to most."""
    local, end = p - start, bounds[np.searchsorted(bounds, q, "right")]  # end: of the pair's sample
    length, alive = np.full(len(p), k), np.ones(len(p), bool)
    for j in range(k, most):
        inside = (local + j < len(tokens)) & (q + j < end)
        alive &= inside & (tokens[np.where(inside, local + j, 0)] == flat[np.where(inside, q + j, 0)])
        length += alive
    return length


def _shorter_copies(h, tokens, start, flat, bounds, todo, best):
    """For the samples in todo, which have no WINDOW-token match so far: stage by stage (SEEDS), their
    matches of seed tokens in this chunk, grown to the right up to the stage above. A sample takes part
    only while it has found nothing longer. h holds WINDOW-token hashes and is stepped down in place."""
    k, ceiling = WINDOW, WINDOW - 1
    for seed in SEEDS:
        if all(best[s][0] > ceiling for s in todo):
            return  # each has a longer copy than this stage can find
        while k > seed:
            _down(h, tokens, k)
            k -= 1
        active = [s for s in todo if best[s][0] <= ceiling and bounds[s + 1] - bounds[s] >= seed]
        if active:
            p, q = _matches(h, tokens, start, seed, _queries(flat, bounds, active, seed), flat)
            _keep_best(best, bounds, _grow(tokens, start, flat, bounds, p, q, seed, ceiling), q, p)
        ceiling = seed - 1


def copy_stats(corpus, samples):
    """For each sample (a sequence of token ids) against corpus (a 1-D uint16/uint32 array, e.g. a memmap
    of train.bin): a Copy with its longest verbatim passage and how many of its WINDOW-token windows occur."""
    flat = np.concatenate([np.asarray(s, dtype=np.uint32) for s in samples] + [np.zeros(0, np.uint32)])
    bounds = np.cumsum([0] + [len(s) for s in samples])
    best = [(0, -1, -1)] * len(samples)
    windows = [max(len(s) - WINDOW + 1, 0) for s in samples]
    long_enough = [s for s in range(len(samples)) if windows[s] > 0]
    queries = _queries(flat, bounds, long_enough, WINDOW) if long_enough else None
    copied = np.zeros(len(samples), bool)  # has a WINDOW-token match somewhere in train.bin so far
    p, q = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for start, tokens, h in _hashed_chunks(corpus, WINDOW):
        if queries is not None:
            p_chunk, q_chunk = _matches(h, tokens, start, WINDOW, queries, flat)
            p.append(p_chunk)
            q.append(q_chunk)
            copied[np.searchsorted(bounds, q_chunk, "right") - 1] = True
        todo = [s for s in range(len(samples)) if not copied[s] and len(samples[s]) > 0]
        if todo:  # a sample copied in a later chunk has wasted this, but its answer stays right
            _shorter_copies(h, tokens, start, flat, bounds, todo, best)
    p, q = np.concatenate(p), np.concatenate(q)
    _keep_best(best, bounds, *_passages(p, q, WINDOW))  # passages may cross chunks: found over all of them
    # a window counts once however often it occurs in train.bin
    found = np.bincount(np.searchsorted(bounds, np.unique(q), "right") - 1, minlength=len(samples))
    return [Copy(*best[s], int(found[s]), windows[s]) for s in range(len(samples))]


# -----------------------------------------------------------------------------
# the run's training text, and the report's lines

def training_tokens(out_dir, ckpt_name, meta):
    """The run's train.bin, memory-mapped with its dataset's dtype. It is found where
    find_meta looks for the vocabulary: the dataset folder the checkpoint names. NoReport says why not."""
    try:
        header = load_checkpoint(out_dir, name=ckpt_name, mmap=True)  # tensors stay on disk: cheap
        path, data_meta_path = dataset_file(header, "train.bin"), dataset_file(header, META_NAME)
        if path is None:
            raise NoReport(f"no copy report: {ckpt_name} does not name its dataset, so there is no train.bin")
        if not os.path.isfile(path):
            raise NoReport(f"no copy report: no training text at {path} (prepare the dataset again to compare with it)")
        data_meta = load_meta(data_meta_path) if os.path.isfile(data_meta_path) else None
    except UserError as e:
        raise NoReport(f"no copy report: {e}") from None
    if (data_meta is None) != (meta is None):
        raise NoReport(f"no copy report: {os.path.dirname(path)} was prepared again since this run with another "
                       "kind of vocabulary (characters against GPT-2 BPE)")
    dtype = token_dtype(data_meta)
    size = os.path.getsize(path)
    if size == 0 or size % dtype.itemsize:
        raise NoReport(f"no copy report: {path} does not hold whole {dtype} tokens; run the dataset's prepare.py again")
    if size // dtype.itemsize > MAX_TOKENS:
        raise NoReport(f"no copy report: {path} has {size // dtype.itemsize:,} tokens, more than the "
                       f"{MAX_TOKENS:,} it can check in seconds (--copy_report=False skips this note)")
    return np.memmap(path, dtype=dtype, mode="r"), data_meta


def to_dataset_ids(samples, meta, data_meta):
    """The samples' ids in the dataset's vocabulary when it was prepared again with other ids (a cleaning that
    dropped poems, more text): the same characters, so copies are still found. A character the dataset no
    longer has becomes an id train.bin never holds. Returns (samples, a note or None)."""
    if meta is None or data_meta["itos"] == meta["itos"]:
        return samples, None
    absent = data_meta["vocab_size"]  # past every id in train.bin: never part of a copy
    to_data = np.array([data_meta["stoi"].get(meta["itos"][i], absent) for i in range(meta["vocab_size"])])
    note = ("note: the dataset was prepared again since this run (its vocabulary differs): the copy report "
            "compares with its train.bin as it is now")
    return [to_data[np.asarray(s, dtype=np.int64)] for s in samples], note


def report_line(i, copy, sample, decode, unit):
    """One sample's line, e.g. 'copy report, sample 1: longest copied passage 37 characters, at character
    120,345 of train.bin: "宝玉听了..."; 201 of 491 10-character windows (40.9%) occur in train.bin'."""
    head = f"copy report, sample {i + 1}: "
    if copy.length == 0:
        head += f"no {unit[:-1]} of it occurs in train.bin"
    else:
        text = decode(list(sample[copy.sample_pos:copy.sample_pos + min(copy.length, SHOWN)]))
        more = "..." if copy.length > SHOWN or len(text) > SHOWN else ""  # a BPE token can be several characters
        shown = text[:SHOWN].replace("\n", "\\n")  # one line per sample, whatever the text holds
        head += (f"longest copied passage {copy.length} {unit}, at {unit[:-1]} {copy.corpus_pos:,} "
                 f"of train.bin: \"{shown}{more}\"")
    if copy.windows == 0:
        return head + f"; shorter than {WINDOW} {unit}, so no windows"
    share = 100 * copy.windows_found / copy.windows
    return head + (f"; {copy.windows_found} of {copy.windows} {WINDOW}-{unit[:-1]} windows "
                   f"({share:.1f}%) occur in train.bin")


def report_lines(out_dir, ckpt_name, meta, samples, decode):
    """The report sample.py prints: one line per sample (samples: the generated ids, prompt left out),
    or a single note when there is no training text to compare with. out_dir None: a pretrained model (--init_from)."""
    try:
        if out_dir is None:
            raise NoReport("no copy report: a pretrained model's training text (GPT-2, an exported folder) "
                           "is not known here")
        corpus, data_meta = training_tokens(out_dir, ckpt_name, meta)
    except NoReport as e:
        return [f"note: {e}"]
    unit = "characters" if meta is not None else "tokens"  # GPT-2 BPE runs: the same report over BPE tokens
    in_data, note = to_dataset_ids(samples, meta, data_meta)
    copies = copy_stats(corpus, in_data)
    return [note] * bool(note) + [report_line(i, c, s, decode, unit) for i, (c, s) in enumerate(zip(copies, samples))]
