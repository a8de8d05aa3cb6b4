"""
Prepare tiny Shakespeare (nanoGPT's classic) as a character-level dataset.

    python data/shakespeare_char/prepare.py                 # input.txt, else download it
    python data/shakespeare_char/prepare.py --input=FILE    # or any other text
    python data/shakespeare_char/prepare.py --help

Same code as data/chinese/prepare.py (charlevel.py); only the default text differs.
"""

import os

from babygpt import charlevel  # the shared character-level code, at the repository's top (make setup installs the repo)

HERE = os.path.dirname(os.path.abspath(__file__))

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
OFFLINE_HINT = f"pass --input=FILE, or save the text as {os.path.join(HERE, 'input.txt')} yourself"


def download_shakespeare(input_txt):
    return charlevel.download(URL, input_txt, OFFLINE_HINT)


if __name__ == "__main__":
    charlevel.main(
        description="Prepare tiny Shakespeare (or --input / --url text) at character level.",
        out_dir=HERE,
        default_source=download_shakespeare,
        default_text="OUT_DIR/input.txt if present, else downloaded there from char-rnn",
        offline_hint=OFFLINE_HINT,
    )
