"""
A sample as babygpt prints it, in nanoGPT's sample.py format: the text, a line of dashes, torch.Size([1, N]).
sample.py prints it and writes it to --out_file, the model cards and experiments/ show it; people and tests split
samples on the dashes. Imports nothing.
"""

SEPARATOR = "---------------"


def format_sample(text, length=None):
    """One sample: its text, the separator, then torch.Size([1, length]) (length: the prompt's and the new tokens,
    the shape nanoGPT prints); without length, the text and the separator alone (sample.py's --out_file)."""
    return "\n".join([text, SEPARATOR] + ([f"torch.Size([1, {length}])"] if length is not None else []))
