"""
The layout shows the architecture (docs/architecture.md): a few scripts at the top, one library package beside
them that imports none of them and nothing under data/, and atomic writes without torch.
Run: python -m pytest tests/test_layout.py
"""

import ast
import glob
import os
import subprocess
import sys

from conftest import REPO

# the top-level modules the package may build on: the model and the settings, not the scripts a user runs
ALLOWED_TOP = {"model", "configurator"}
MAX_TOP_FILES = 9


def imported_modules(path):
    """Every module name a file imports, at its top or inside a function."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_package_imports_no_script_and_nothing_under_data():
    scripts = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "*.py"))} - ALLOWED_TOP
    wrong = []
    for path in sorted(glob.glob(os.path.join(REPO, "babygpt", "*.py"))):
        for name in imported_modules(path):
            if name.split(".")[0] in scripts or name == "data" or name.startswith("data."):
                wrong.append(f"{os.path.relpath(path, REPO)} imports {name}")
    assert not wrong, "the package must not reach into scripts or data/*/prepare.py:\n" + "\n".join(wrong)


def test_the_atomic_writes_and_the_run_files_import_no_torch():
    """status.json's and log.csv's writers are read by programs that watch a run: no torch to import."""
    code = ("import sys, babygpt.atomic, babygpt.status, babygpt.progress, babygpt.errors; "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False", "babygpt.atomic, status, progress or errors imports torch"


def test_few_scripts_at_the_top():
    top = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "*.py")))
    assert len(top) <= MAX_TOP_FILES, f"{len(top)} .py files at the top (at most {MAX_TOP_FILES}): {top}"


def test_readme_layout_and_architecture_name_every_module():
    """README's Layout and docs/architecture.md describe the tree as it is: each script at the top and each
    module of the package is named in both."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        layout = f.read().split("## Layout", 1)[1]
    with open(os.path.join(REPO, "docs", "architecture.md"), encoding="utf-8") as f:
        architecture = f.read()
    top = [os.path.basename(p) for p in glob.glob(os.path.join(REPO, "*.py"))]
    package = [os.path.basename(p) for p in glob.glob(os.path.join(REPO, "babygpt", "*.py"))
               if not p.endswith("__init__.py")]
    missing = [f"README Layout: {name}" for name in top + package if name not in layout]
    missing += [f"docs/architecture.md: {name}" for name in top if name not in architecture]
    missing += [f"docs/architecture.md: {name[:-3]}" for name in package if name[:-3] not in architecture]
    assert not missing, "not described:\n" + "\n".join(missing)
