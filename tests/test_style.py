"""
The code stays readable in an evening: no function over ~60 lines (STYLE.md), every script opens
with a docstring that gives its run command.
Run: python -m pytest tests/test_style.py
"""

import ast
import glob
import os

import pytest

from conftest import REPO

MAX_LINES = 60        # any function, tests included
MAX_CODE_LINES = 50   # a function outside tests (issue: the house, one look per function)
MAX_CLASS_LINES = 120


def project_files():
    files = [f for pattern in ("*.py", "babygpt/*.py", "config/*.py", "data/*/*.py", "experiments/*.py",
                               "experiments/config/*.py", "pretrained/*.py", "tests/*.py")
             for f in glob.glob(os.path.join(REPO, pattern))]
    assert len(files) > 20, f"the project's Python files should be found, got {files}"
    return files


def test_no_function_is_over_60_lines_and_outside_tests_none_over_50_nor_a_class_over_120():
    long = []
    for path in project_files():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        in_tests = os.path.relpath(path, REPO).startswith("tests")
        for node in ast.walk(tree):
            lines = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                limit = MAX_LINES if in_tests else MAX_CODE_LINES
            elif isinstance(node, ast.ClassDef) and not in_tests:
                limit = MAX_CLASS_LINES
            else:
                continue
            if lines > limit:
                long.append(f"{os.path.relpath(path, REPO)}:{node.lineno} {node.name} has {lines} lines (at most {limit})")
    assert not long, "split these:\n" + "\n".join(long)


def test_every_script_docstring_gives_its_command():
    """Scripts (a __main__ block) and test files; modules like runtime.py only say what they hold."""
    missing = []
    for path in project_files():
        with open(path, encoding="utf-8") as f:
            src = f.read()
        if "__main__" not in src and not os.path.basename(path).startswith("test_"):
            continue
        if "python" not in (ast.get_docstring(ast.parse(src)) or ""):
            missing.append(os.path.relpath(path, REPO))
    assert not missing, f"these files' docstrings should say how to run them: {missing}"


def test_shared_code_is_imported_by_name():
    """One import story: the repository is installed (pip install -e ., in make setup), so no script
    edits sys.path, and pyproject.toml names every top-level module (a new one left out would import
    only from the repository's root, and data/*/prepare.py could not reach it)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    edits = [os.path.relpath(p, REPO) for p in project_files()
             if "/tests/" not in p and "sys.path" in open(p, encoding="utf-8").read()]
    assert not edits, f"these files edit sys.path; import the installed modules by name instead: {edits}"
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["py-modules"])
    on_disk = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "*.py"))}
    assert listed == on_disk, f"pyproject.toml's py-modules should be the top-level modules: " \
                              f"missing {sorted(on_disk - listed)}, extra {sorted(listed - on_disk)}"
