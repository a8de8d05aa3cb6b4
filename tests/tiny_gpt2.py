"""
Offline stand-ins for the downloads GPT-2 needs, built with the real libraries: a small tiktoken
Encoding from our own ranks, and a tiny random transformers GPT2LMHeadModel saved to a folder.
Imported by tests/test_pretrained.py and tests/test_openwebtext.py.
"""

import tiktoken
import torch

# GPT-2's pre-tokenizer regex (contractions, words, numbers, punctuation, spaces)
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
MERGES = [b"th", b"he", b"the", b" t", b" the", b"in", b"an", b"\xe5\xae", "宝".encode(), "玉".encode()[:2],
          "玉".encode()]


def tiny_encoding():
    """Byte-level BPE like GPT-2's: all 256 bytes, a few merges, and <|endoftext|> last."""
    ranks = {bytes([i]): i for i in range(256)}
    for m in MERGES:
        ranks.setdefault(m, len(ranks))
    return tiktoken.Encoding(name="tiny_gpt2", pat_str=GPT2_PAT, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": len(ranks)})


def save_tiny_gpt2(folder, vocab_size, n_positions=32, seed=0):
    """A random 2-layer GPT-2 written with save_pretrained. initializer_range 0.2 (GPT-2 uses 0.02)
    gives logits large enough that a wrong transpose or a missing bias shows in the comparison."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=n_positions, vocab_size=vocab_size,
                        initializer_range=0.2, bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    return model
