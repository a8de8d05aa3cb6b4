"""
Character-level dataset preparation, shared by every data/<name>/prepare.py.

Not run directly; the dataset scripts call main():
    python data/chinese/prepare.py [--input=PATH] [--url=URL] [--val_fraction=0.1] ...
    python data/shakespeare_char/prepare.py --help

The text streams through in 2 MB chunks, so a 150 MB corpus never sits in memory as text, code
points and ids at once (nanoGPT's prepare holds all three and loops in Python per character):
  1. vocabulary pass: decode (UTF-8, else GB18030), view the chunk as numpy code points
     (UTF-32), count them with np.bincount, and write them to train.bin's temporary file as
     provisional ids (numbered in order of first appearance, one gather per chunk);
  2. encoding pass: once the vocabulary is known, read the provisional ids back and rewrite
     them in place as ids in code point order (nanoGPT's sorted(set(text))), moving the tail
     (--val_fraction) into val.bin. Decoding is the costliest step; this way the text is decoded only once.
Outputs are written to temporary files and renamed only when everything succeeded, so a failed
or interrupted run keeps the earlier dataset.
"""

import argparse
import codecs
import contextlib
import os
import pickle
import re
import signal
import urllib.error
import urllib.request

import numpy as np

from babygpt.errors import UserError, run_main

CHUNK_BYTES = 1 << 21        # 2 MB of input per step: big enough for numpy to pay off, small for RSS
CHUNK_IDS = 1 << 20          # pass 2 reads 1M staged ids (2 or 4 MB) per step, for the same reasons
N_CODEPOINTS = 0x110000      # every Unicode code point, so the lookup tables need no bounds checks
UINT16_LIMIT = 65536         # ids 0..65535 fit in uint16; a bigger vocabulary needs uint32
UTF8_BOM = codecs.BOM_UTF8
OUTPUTS = ("train.bin", "val.bin", "meta.pkl")  # meta.pkl last: it describes the two .bin files


class DecodeFailure(Exception):
    """The bytes are not valid in the encoding tried; offset is counted from the file's start."""

    def __init__(self, offset, byte):
        super().__init__(offset, byte)
        self.offset, self.byte = offset, byte


# -----------------------------------------------------------------------------
# sources: a file, a folder of .txt files, or a download

def natural_key(path):
    """Sort 'ch2.txt' before 'ch10.txt': chapters are rarely zero-padded."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def list_text_files(path):
    """The file itself, or every .txt under a folder (recursively, hidden entries skipped)."""
    if not os.path.exists(path):
        raise UserError(f"--input={path}: no such file or folder")
    if os.path.isfile(path):
        return [path]
    found = []
    for root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .git, .ipynb_checkpoints
        found += [os.path.join(root, n) for n in names
                  if n.lower().endswith(".txt") and not n.startswith(".")]
    if not found:
        raise UserError(f"--input={path}: folder has no .txt files (searched recursively); "
                           "save the text as .txt files or pass --input=FILE")
    return sorted(found, key=lambda p: natural_key(os.path.relpath(p, path)))


def download(url, dest, offline_hint):
    """Fetch url into dest via a .part file, so a broken download never replaces a good dest."""
    print(f"downloading {url} -> {dest}")
    part = dest + ".part"
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(part, "wb") as f:
            while block := response.read(1 << 20):
                f.write(block)
        os.replace(part, dest)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise UserError(f"could not download {url} ({reason}); {offline_hint}") from None
    finally:
        if os.path.exists(part):
            os.remove(part)
    return dest


# -----------------------------------------------------------------------------
# decoding: bytes -> code point arrays, one chunk at a time

def check_not_binary(path, raw, offset):
    """Reject UTF-16 and binary files early: they would decode into noise, not fail."""
    if offset == 0 and raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        raise UserError(f"{path} is UTF-16 (starts with byte-order mark {raw[:2].hex(' ')}); "
                           "save it as UTF-8 and run again")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise UserError(f"{path} looks like a binary file (NUL byte at offset {offset + nul}); "
                           "prepare reads text files in UTF-8 or GB18030")


def decode_step(decoder, raw, offset, final):
    """Decode one chunk; on bad bytes report the absolute file offset of the first one."""
    pending = decoder.getstate()[0]  # bytes of a character split across the previous chunk
    try:
        return decoder.decode(raw, final)
    except UnicodeDecodeError as e:
        start = offset - len(pending) + e.start  # e.start counts from the pending bytes
        raise DecodeFailure(start, e.object[e.start]) from None


def to_codepoints(text, normalize):
    """str -> uint32 code points. numpy keeps a str array as UCS-4, which is the code points;
    building one is ~4x faster than text.encode("utf-32-le"), which validates as it copies."""
    if not text:
        return np.zeros(0, dtype=np.uint32)  # numpy would store "" as one NUL
    cps = np.array([text]).view(np.uint32)  # 1 string of n characters -> n numbers
    if normalize == "halfwidth":
        wide = (cps >= 0xFF01) & (cps <= 0xFF5E)  # full-width ！..～ sit 0xFEE0 above ASCII
        cps[wide] -= 0xFEE0
        cps[cps == 0x3000] = 0x20  # ideographic space -> space
    return cps


def file_chunks(path, encoding, normalize="none"):
    """Yield the file's text as uint32 code point arrays, with \\r\\n and \\r turned into \\n."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, held_cr = 0, ""
    with open(path, "rb") as f:
        while True:
            raw = f.read(CHUNK_BYTES)
            check_not_binary(path, raw, offset)
            if offset == 0 and encoding == "utf-8" and raw.startswith(UTF8_BOM):
                raw, offset = raw[len(UTF8_BOM):], len(UTF8_BOM)  # a BOM is not text
            text = held_cr + decode_step(decoder, raw, offset, final=not raw)
            offset += len(raw)
            # a \r ending this chunk may pair with a \n opening the next: decide next time
            held_cr = "\r" if raw and text.endswith("\r") else ""
            text = text[:-1] if held_cr else text
            if "\r" in text:
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            if text:
                yield to_codepoints(text, normalize)
            if not raw:
                return


# -----------------------------------------------------------------------------
# pass 1 (vocabulary): decode once, count, and stage the text as provisional ids

class VocabOverflow(Exception):
    """More distinct characters than the provisional ids' dtype can number."""


class ProvisionalIds:
    """Numbers each code point in order of first appearance, so pass 1 can write ids before
    the vocabulary, and so nanoGPT's sorted numbering, is known. Ids given to characters of a
    failed UTF-8 attempt stay given, unused: pass 2 maps every id that occurs."""

    def __init__(self, dtype):
        self.of = np.zeros(N_CODEPOINTS, dtype=dtype)  # code point -> provisional id
        self.seen = np.zeros(N_CODEPOINTS, dtype=bool)
        self.n = 0

    def encode(self, cps, chunk_counts):
        """Code points (intp) -> provisional ids; chunk_counts = np.bincount(cps)."""
        new = np.flatnonzero(chunk_counts)  # the chunk's distinct code points, sorted
        new = new[~self.seen[new]]
        if self.n + len(new) > np.iinfo(self.of.dtype).max + 1:
            raise VocabOverflow
        self.seen[new] = True
        self.of[new] = np.arange(self.n, self.n + len(new))
        self.n += len(new)
        # one gather per chunk, not a dict lookup per character; "clip" skips a bounds check
        # that cannot fail: the table has an entry for every code point
        return self.of.take(cps, mode="clip")


def add_counts(total, part):
    """total + part for count arrays of different lengths; returns the (maybe longer) total."""
    if len(part) > len(total):
        total = np.concatenate([total, np.zeros(len(part) - len(total), dtype=np.int64)])
    total[:len(part)] += part
    return total


def stage_file(path, encoding, normalize, sep, prov, staged):
    """Decode path, count its code points and append their provisional ids to staged, sep first
    if the file has text. Returns (counts per code point, as long as the largest one + 1;
    the last code point)."""
    counts, last = np.zeros(0, dtype=np.int64), None
    for cps in file_chunks(path, encoding, normalize):
        if last is None and sep:  # only now do we know the file has text to separate
            cps = np.concatenate([to_codepoints(sep, "none"), cps])
        cps = cps.astype(np.intp)  # what bincount and take index with: cast once, not in each
        chunk_counts = np.bincount(cps)  # ~64K long for Chinese, not 1.1M
        staged.write(prov.encode(cps, chunk_counts))  # arrays are buffers: written without a copy
        counts = add_counts(counts, chunk_counts)
        last = int(cps[-1])
    return counts, last


def stage_file_any_encoding(path, normalize, sep, prov, staged):
    """Try UTF-8 (with or without BOM), then GB18030 (a superset of GBK and GB2312)."""
    start = staged.tell()
    try:
        return "utf-8", *stage_file(path, "utf-8", normalize, sep, prov, staged)
    except DecodeFailure as utf8:
        staged.seek(start)
        staged.truncate()  # drop what the UTF-8 attempt staged before its bad byte
        try:
            return "gb18030", *stage_file(path, "gb18030", normalize, sep, prov, staged)
        except DecodeFailure as gb:
            raise UserError(
                f"{path}: not UTF-8 (bad byte 0x{utf8.byte:02x} at offset {utf8.offset}) "
                f"nor GB18030 (bad byte 0x{gb.byte:02x} at offset {gb.offset}); "
                "re-save it as UTF-8") from None


def read_text(path):
    """A small file as one string, decoded the way prepare decodes: UTF-8 (BOM dropped), else
    GB18030, with \\r\\n and \\r as \\n. Returns (text, encoding). sample.py reads FILE: prompts so."""
    try:
        return "".join(cps.tobytes().decode("utf-32-le") for cps in file_chunks(path, "utf-8")), "utf-8"
    except DecodeFailure as utf8:
        try:
            return "".join(cps.tobytes().decode("utf-32-le") for cps in file_chunks(path, "gb18030")), "gb18030"
        except DecodeFailure:
            raise UserError(f"{path}: neither UTF-8 (bad byte 0x{utf8.byte:02x} at offset "
                               f"{utf8.offset}) nor GB18030; re-save it as UTF-8") from None


def separator(last):
    """What goes between two files so that exactly one blank line separates them."""
    return "\n" if last == ord("\n") else "\n\n"


def stage_files(files, normalize, prov, staged):
    """Every file, in order, one blank line between files (none around files without text)."""
    counts, encodings, last = np.zeros(0, dtype=np.int64), [], None
    for path in files:
        sep = separator(last) if last is not None else ""
        encoding, file_counts, file_last = stage_file_any_encoding(path, normalize, sep, prov, staged)
        counts = add_counts(counts, file_counts)
        encodings.append(encoding)
        last = file_last if file_last is not None else last
    return counts, encodings


def stage_chars(files, normalize, staged):
    """Pass 1. Returns counts per code point, each file's encoding, and the ProvisionalIds
    in which staged holds the text."""
    try:
        prov = ProvisionalIds(np.uint16)
        return *stage_files(files, normalize, prov, staged), prov
    except VocabOverflow:  # > 65,536 distinct characters, rare: read again with 4-byte ids
        staged.seek(0)
        staged.truncate()
        prov = ProvisionalIds(np.uint32)
        return *stage_files(files, normalize, prov, staged), prov


# -----------------------------------------------------------------------------
# pass 2 (encoding): provisional ids -> ids, in place, and the tail into val.bin

def encode_files(train_f, staged_dtype, final, n_train, val_f):
    """Rewrite the provisional ids (of staged_dtype) that pass 1 left in train_f as ids, through
    the table final; the first n_train stay in train_f, the rest go to val_f. Returns how many.
    In place, so the ids land in page-cache pages that pass 1 already touched: new pages are
    what writing costs most, and a separate staging file took twice as many."""
    prov = np.empty(CHUNK_IDS, dtype=staged_dtype)  # both reused: no page faults per chunk
    ids = np.empty(CHUNK_IDS, dtype=final.dtype)
    done = 0
    while True:
        train_f.seek(done * prov.itemsize)
        n = train_f.readinto(prov) // prov.itemsize
        if not n:
            break
        final.take(prov[:n], out=ids[:n], mode="clip")  # final is vocabulary-sized: in cache
        k = min(max(n_train - done, 0), n)
        # ids are never wider than the provisional ones (only > 65,536 characters widen
        # both), so this writes at or before the read position: nothing unread is overwritten
        train_f.seek(done * ids.itemsize)
        train_f.write(ids[:k])
        val_f.write(ids[k:n])
        done += n
    train_f.truncate(n_train * ids.itemsize)
    return done


# -----------------------------------------------------------------------------
# outputs: staged in temporary files, renamed together at the end

@contextlib.contextmanager
def signals_blocked():
    """Ctrl-C between two renames would pair a new train.bin with an old meta.pkl: hold it off."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows has no signal masks
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def staged_outputs(out_dir, names=OUTPUTS):
    """Yield {name: temp path}; when the block succeeds, rename each temp over its name.
    Temps left over (the block failed or was interrupted) are removed, and so is out_dir if
    this call made it: pass 1 already writes here, and a bad input should leave nothing."""
    made = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    temps = {name: os.path.join(out_dir, f".{name}.{os.getpid()}.tmp") for name in names}
    done = False
    try:
        yield temps
        with signals_blocked():
            for name in names:
                os.replace(temps[name], os.path.join(out_dir, name))
        done = True
    finally:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.remove(tmp)
        if made and not done and not os.listdir(out_dir):
            os.rmdir(out_dir)


def write_meta(path, vocab, dtype, n_train, n_val, extra=None):
    """nanoGPT's keys plus dtype and token counts, as plain dicts/ints/strs (restricted unpickler).
    extra: a dataset's own keys (plain data too), e.g. data/poetry's ci_forms."""
    itos = {i: chr(cp) for i, cp in enumerate(vocab.tolist())}
    meta = {"vocab_size": len(itos), "itos": itos, "stoi": {ch: i for i, ch in itos.items()},
            "dtype": np.dtype(dtype).name, "train_tokens": n_train, "val_tokens": n_val, **(extra or {})}
    with open(path, "wb") as f:
        pickle.dump(meta, f)


# -----------------------------------------------------------------------------
# checks and reports

def check_has_text(vocab, label):
    if len(vocab) == 0:
        raise UserError(f"{label} is empty; put some text in it")
    if all(chr(cp).isspace() for cp in vocab.tolist()):
        raise UserError(f"{label} holds only whitespace; put some text in it")


def split_sizes(n, val_fraction, block_size):
    """First (1 - val_fraction) of the tokens train, the rest validate; each must fit a block."""
    n_train = int(n * (1 - val_fraction))
    n_val = n - n_train
    # train.py samples windows of block_size + 1 tokens, so a split needs more than block_size
    if n_val <= block_size:
        raise UserError(f"validation split has {n_val:,} tokens (--val_fraction={val_fraction} "
                           f"of {n:,}), needs more than --block_size={block_size}; add text, "
                           "raise --val_fraction, or lower --block_size")
    if n_train <= block_size:
        raise UserError(f"training split has {n_train:,} tokens, needs more than "
                           f"--block_size={block_size}; add text, lower --val_fraction, "
                           "or lower --block_size")
    return n_train, n_val


def encoding_name(path, encoding):
    if encoding == "gb18030":
        return "GB18030"
    with open(path, "rb") as f:
        return "UTF-8 with BOM" if f.read(len(UTF8_BOM)) == UTF8_BOM else "UTF-8"


def report_source(label, files, encodings, log):
    names = [encoding_name(p, e) for p, e in zip(files, encodings)]
    n_bytes = sum(os.path.getsize(p) for p in files)
    if len(files) == 1:
        log(f"read {label}: {n_bytes:,} bytes, encoding {names[0]}")
        return
    tally = ", ".join(f"{name} x{names.count(name)}" for name in sorted(set(names)))
    log(f"read {label}: {len(files)} files, {n_bytes:,} bytes, encodings {tally}")
    odd = [os.path.relpath(p, label) for p, name in zip(files, names) if name != "UTF-8"]
    if odd:
        log(f"  not plain UTF-8: {', '.join(odd[:5])}{' ...' if len(odd) > 5 else ''}")


def show_char(ch):
    """One visible token per character, so the report lines stay readable."""
    if ch.isprintable() and not ch.isspace():
        return ch
    return {"\n": "\\n", "\t": "\\t", " ": "' '"}.get(ch, f"U+{ord(ch):04X}")


def is_private_use(cp):
    return 0xE000 <= cp <= 0xF8FF or cp >= 0xF0000  # BMP area, planes 15 and 16


def report_vocab(vocab, freq, dtype, log):
    """Vocabulary size, the 20 most frequent characters, and the rare ones (often scraping noise)."""
    n = int(freq.sum())
    log(f"length of dataset in characters: {n:,}")
    note = f" > {UINT16_LIMIT:,}: tokens stored as uint32" if dtype == np.uint32 else ""
    log(f"vocab size: {len(vocab):,}{note}")
    top = np.argsort(-freq, kind="stable")[:20]
    log("top 20: " + "  ".join(f"{show_char(chr(vocab[i]))} {freq[i] / n:.1%}" for i in top))
    once = vocab[freq == 1].tolist()
    examples = " ".join(f"{show_char(chr(cp))}(U+{cp:04X})" for cp in once[:8])
    log(f"{len(once):,} characters occur only once" + (f", e.g. {examples}" if once else ""))
    pua = sum(is_private_use(cp) for cp in vocab.tolist())
    if pua:
        log(f"{pua:,} distinct private-use-area characters: usually scraping noise, worth removing")


# -----------------------------------------------------------------------------
# a vocabulary that extends a model's: fine-tuning keeps the base model's ids

def read_base_vocab(path):
    """--vocab_from=PATH (a model folder, a run's out_dir, or a meta.pkl) -> (its meta.pkl's path, its
    characters as code points in id order). Read with checkpoint's unpickler, which runs no code."""
    meta_path = os.path.join(path, "meta.pkl") if os.path.isdir(path) else path
    if not os.path.isfile(meta_path):
        raise UserError(f"--vocab_from={path}: no meta.pkl there; give a model folder (pretrained/hlm), "
                           "a run's out_dir or a meta.pkl")
    from babygpt.checkpoint import load_meta  # imports torch: only a prepare that extends a vocabulary pays for it
    meta = load_meta(meta_path)
    itos = [meta["itos"].get(i) for i in range(meta["vocab_size"])]
    if not all(isinstance(c, str) and len(c) == 1 for c in itos):
        raise UserError(f"--vocab_from={path}: {meta_path} is not a character vocabulary with ids "
                           f"0..{meta['vocab_size'] - 1}; give a babygpt model's folder")
    return meta_path, np.array([ord(c) for c in itos], dtype=np.int64)


def extend_vocab(base, present):
    """The base's code points in their id order, then those of present (sorted) that the base lacks."""
    return np.concatenate([base, present[~np.isin(present, base)]])


def report_extension(base_path, base, vocab, counts, log):
    """How many characters the base lacked, and what share of the text they are."""
    new = vocab[len(base):]
    share = counts[new].sum() / counts.sum()
    examples = " ".join(show_char(chr(cp)) for cp in new[np.argsort(-counts[new], kind="stable")][:10].tolist())
    log(f"vocabulary: {len(vocab):,} ids, extending {base_path}: its {len(base):,} characters keep their ids, "
        f"{len(new):,} new ones appended ({share:.1%} of the text)" + (f", most frequent: {examples}" if len(new) else ""))


# -----------------------------------------------------------------------------
# the whole preparation, and the command line around it

def prepare(files, out_dir, label=None, val_fraction=0.1, block_size=256, normalize="none",
            log=print, vocab_from=None):
    """Text files -> out_dir/{train.bin, val.bin, meta.pkl}. Returns the numbers it printed.
    vocab_from: a model folder or meta.pkl whose ids the vocabulary keeps (see read_base_vocab)."""
    label = label or files[0]
    base_path, base = read_base_vocab(vocab_from) if vocab_from else (None, None)
    with staged_outputs(out_dir) as tmp, open(tmp["train.bin"], "w+b") as train_f:
        counts, encodings, prov = stage_chars(files, normalize, train_f)  # provisional ids
        report_source(label, files, encodings, log)
        vocab = np.flatnonzero(counts)  # code point order = nanoGPT's sorted(set(text))
        check_has_text(vocab, label)
        freq = counts[vocab]
        n = int(freq.sum())
        n_train, n_val = split_sizes(n, val_fraction, block_size)
        ids_of = vocab if base is None else extend_vocab(base, vocab)  # the code point of each id
        dtype = np.uint16 if len(ids_of) <= UINT16_LIMIT else np.uint32
        report_vocab(vocab, freq, dtype, log)
        if base is not None:
            report_extension(base_path, base, ids_of, counts, log)

        lut = np.zeros(N_CODEPOINTS, dtype=dtype)  # code point -> id
        lut[ids_of] = np.arange(len(ids_of), dtype=dtype)
        final = np.zeros(prov.n, dtype=dtype)  # provisional id -> id
        final[prov.of[vocab]] = lut[vocab]
        with open(tmp["val.bin"], "wb") as val_f:
            encode_files(train_f, prov.of.dtype, final, n_train, val_f)
        write_meta(tmp["meta.pkl"], ids_of, dtype, n_train, n_val)
    log(f"train has {n_train:,} tokens, val has {n_val:,} tokens ({np.dtype(dtype).name})")
    log(f"wrote {', '.join(OUTPUTS)} to {out_dir}")
    return {"chars": n, "vocab_size": len(ids_of), "train_tokens": n_train, "val_tokens": n_val,
            "dtype": np.dtype(dtype).name, "encodings": encodings,
            "new_chars": None if base is None else len(ids_of) - len(base)}


def prepare_texts(train_text, val_text, out_dir, block_size=256, extra_meta=None, log=print):
    """Two strings -> out_dir/{train.bin, val.bin, meta.pkl}, for a dataset that splits its text itself
    (data/poetry splits by poem, not at 90 % of the text). Same outputs, vocabulary order and report as
    prepare(); extra_meta: keys added to meta.pkl. Returns the numbers it printed."""
    train_cps, val_cps = to_codepoints(train_text, "none"), to_codepoints(val_text, "none")
    counts = add_counts(np.bincount(train_cps), np.bincount(val_cps))
    vocab = np.flatnonzero(counts)
    check_has_text(vocab, "the text")
    for name, n in (("validation", len(val_cps)), ("training", len(train_cps))):
        if n <= block_size:  # train.py samples windows of block_size + 1 tokens
            raise UserError(f"the {name} split has {n:,} tokens, needs more than --block_size={block_size}; "
                               "add text, or lower --block_size")
    dtype = np.uint16 if len(vocab) <= UINT16_LIMIT else np.uint32
    report_vocab(vocab, counts[vocab], dtype, log)
    lut = np.zeros(N_CODEPOINTS, dtype=dtype)  # code point -> id, as prepare() builds it
    lut[vocab] = np.arange(len(vocab), dtype=dtype)
    with staged_outputs(out_dir) as tmp:
        lut.take(train_cps).tofile(tmp["train.bin"])
        lut.take(val_cps).tofile(tmp["val.bin"])
        write_meta(tmp["meta.pkl"], vocab, dtype, len(train_cps), len(val_cps), extra_meta)
    log(f"train has {len(train_cps):,} tokens, val has {len(val_cps):,} tokens ({np.dtype(dtype).name})")
    log(f"wrote {', '.join(OUTPUTS)} to {out_dir}")
    return {"chars": len(train_cps) + len(val_cps), "vocab_size": len(vocab), "train_tokens": len(train_cps),
            "val_tokens": len(val_cps), "dtype": np.dtype(dtype).name}


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage and exits 2 on a bad flag; we want our one-line error instead."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


def build_parser(description, out_dir, default_text):
    p = OneLineParser(description=description, allow_abbrev=False)
    p.add_argument("--input", metavar="PATH", help="your own text: a file, or a folder whose .txt "
                   "files are read recursively in sorted order, a blank line between files "
                   f"(default: {default_text})")
    p.add_argument("--url", help="download this text to OUT_DIR/input.txt, then prepare it")
    p.add_argument("--out_dir", metavar="DIR", default=out_dir,
                   help=f"folder for input.txt, meta.pkl, train.bin, val.bin (default: {out_dir})")
    p.add_argument("--val_fraction", metavar="F", type=float, default=0.1,
                   help="share of tokens, from the end of the text, kept for validation "
                        "(default: 0.1)")
    p.add_argument("--block_size", metavar="N", type=int, default=256,
                   help="context length you will train with: each split must be longer "
                        "(default: 256)")
    p.add_argument("--vocab_from", metavar="PATH",
                   help="keep the ids of a model's vocabulary (a model folder such as pretrained/hlm, a run's "
                        "out_dir, or a meta.pkl) and append the characters it lacks, to fine-tune that model")
    p.add_argument("--normalize", choices=["none", "halfwidth"], default="none",
                   help="halfwidth: map full-width ASCII (Ａ１！，) and the ideographic space "
                        "to their ASCII forms (default: none)")
    return p


def check_options(val_fraction, block_size):
    """The two numbers prepare needs, checked before anything is read or written."""
    if not 0 < val_fraction < 1:
        raise UserError(f"--val_fraction={val_fraction} must be between 0 and 1, "
                           "exclusive (default 0.1)")
    if block_size < 1:
        raise UserError(f"--block_size={block_size} must be at least 1 (default 256)")


def check_args(args):
    check_options(args.val_fraction, args.block_size)
    if args.input and args.url:
        raise UserError("pass --input or --url, not both")


def resolve_source(out_dir, default_source, offline_hint, input=None, url=None, log=print):
    """--input, else --url (downloaded to input.txt), else input.txt, else the dataset's default."""
    if input:
        return input
    os.makedirs(out_dir, exist_ok=True)
    input_txt = os.path.join(out_dir, "input.txt")
    if url:
        return download(url, input_txt, offline_hint)
    if os.path.exists(input_txt):
        log(f"using {input_txt} (delete it to start again from the default text)")
        return input_txt
    return default_source(input_txt)


def prepare_input(path, out_dir, val_fraction=0.1, block_size=256, normalize="none", log=print, vocab_from=None):
    """What `prepare.py --input=PATH --out_dir=OUT_DIR` does once the source is known: check the
    options, list the text files (a file, or a folder's .txt files) and prepare them.
    The command line and the web page (web.py) both call it."""
    check_options(val_fraction, block_size)
    return prepare(list_text_files(path), out_dir, path, val_fraction, block_size, normalize, log, vocab_from)


def main(description, out_dir, default_source, default_text, offline_hint, argv=None):
    """A dataset's prepare.py in one call. default_source(input_txt) writes the dataset's default
    text to input_txt and returns that path (default_text says what it is, for --help);
    offline_hint says what to do when a download fails."""
    def prepare_from_args():
        args = build_parser(description, out_dir, default_text).parse_args(argv)
        check_args(args)
        path = resolve_source(args.out_dir, default_source, offline_hint, args.input, args.url)
        with explained_os_errors():
            prepare_input(path, args.out_dir, args.val_fraction, args.block_size, args.normalize,
                          vocab_from=args.vocab_from)
    run_main(prepare_from_args, interrupted=INTERRUPTED)


# what a Ctrl-C during prepare leaves: the outputs are replaced together (write_outputs)
INTERRUPTED = ("\ninterrupted: train.bin, val.bin and meta.pkl are all from before, or all from this run if it "
               "had just finished")


@contextlib.contextmanager
def explained_os_errors():
    """An unreadable file or a full disk is still one line."""
    try:
        yield
    except OSError as e:
        raise UserError(f"{e.filename or ''}: {e.strerror or e}") from None
