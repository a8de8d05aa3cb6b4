"""
nanoGPT's configuration model, with its holes closed.

A script's settings are its module-level globals. They are overridden first by any config file
named on the command line (a Python file of plain assignments), then by --key=value arguments:
    python train.py config/train_chinese.py --batch_size=32 --compile=False
Unknown keys and values of the wrong type are refused with one line that says what to do;
--help lists every key with its default and the comment beside it in the script.
"""

import ast
import difflib
import os

from babygpt.errors import UserError


def settings(namespace):
    """A script's settings from its globals(): the plain values (int, float, bool, str) under lowercase
    names. An imported constant (BEST_NAME = "best.pt") is not a setting and stays out of --help."""
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and k.islower() and isinstance(v, (int, float, bool, str))}


def _closest(key, keys):
    match = difflib.get_close_matches(key, keys, n=1)
    return f"; did you mean '{match[0]}'?" if match else "; see --help for the keys"


def _check_type(key, value, default, where):
    """Return value converted to the default's type, or raise UserError."""
    if default is None or value is None:
        return value
    kind = type(default)
    if kind is float and type(value) is int:
        return float(value)  # --dropout=0 means 0.0
    if type(value) is not kind:
        raise UserError(f"{where}: {key} must be {kind.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _parse_value(raw, default):
    """--key=value text -> Python value; strings need no quotes (--device=cpu, --start=你好)."""
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw
    if isinstance(default, str) and not isinstance(value, str):
        return raw  # --start=123 is the text "123"
    return value


def documented_keys(script_path):
    """{key: (default, comment)} for each plain top-level assignment of a script, read from its
    source: the value as written and the comment beside it. --help and the web page both use it."""
    with open(script_path, encoding="utf-8") as f:
        src = f.read()
    lines = src.splitlines()
    keys = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                default = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError):  # not a plain value (DEFAULTS = {...comprehension...}): not a setting
                continue
            rest = lines[node.end_lineno - 1][node.end_col_offset:]
            comment = [rest.split("#", 1)[1].strip()] if "#" in rest else []
            for line in lines[node.end_lineno:]:  # indented comment-only lines below continue it
                if not (comment and line[:1].isspace() and line.lstrip().startswith("#")):
                    break
                comment.append(line.lstrip()[1:].strip())
            keys[node.targets[0].id] = (default, " ".join(comment))
    return keys


def help_text(config, script_path):
    """One line per key: name, default, and the comment written beside it in the script."""
    comments = {key: comment for key, (_, comment) in documented_keys(script_path).items()}
    width = max(len(k) for k in config)
    rows = [f"usage: python {os.path.basename(script_path)} [config/file.py ...] [--key=value ...]", ""]
    for key, default in config.items():
        rows.append(f"  --{key:<{width}} = {default!r:<16} {comments.get(key, '')}")
    return "\n".join(rows)


def _apply_file(config, path, given):
    if not os.path.isfile(path):
        raise UserError(f"config file '{path}' not found; the configs are in config/")
    with open(path, encoding="utf-8") as f:
        src = f.read()
    namespace = {}
    try:
        exec(compile(src, path, "exec"), namespace)
    except Exception as e:
        raise UserError(f"config file '{path}' does not run: {type(e).__name__}: {e}") from None
    for key, value in namespace.items():
        if key.startswith("_") or type(value).__name__ == "module":
            continue
        if key not in config:
            raise UserError(f"{path}: unknown key '{key}'{_closest(key, config)}")
        config[key] = _check_type(key, value, config[key], path)
        given.add(key)


def configure(config, argv, script_path, given=None):
    """Apply config files and --key=value arguments from argv to config (a dict of defaults).
    Returns the updated dict, or None when --help was asked for (after printing it). given, a set, receives
    the keys a file or an argument set, even to their default value (train.py takes the shape of the model it
    continues for keys left alone, and refuses one asked for that differs)."""
    config = dict(config)
    defaults = dict(config)
    given = set() if given is None else given
    for arg in argv:
        if arg in ("-h", "--help"):
            print(help_text(defaults, script_path))
            return None
        if not arg.startswith("--"):
            _apply_file(config, arg, given)
            continue
        key, eq, raw = arg[2:].partition("=")
        if not eq:
            raise UserError(f"argument '{arg}' must look like --{key}=value")
        if key not in config:
            raise UserError(f"unknown key '--{key}'{_closest(key, config)}")
        config[key] = _check_type(key, _parse_value(raw, defaults[key]), defaults[key], f"--{key}")
        given.add(key)
    return config
