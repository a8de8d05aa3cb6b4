"""
The README's examples run as written on a CPU: here, the Hugging Face round trip (export a model folder,
read it with transformers' pipeline, sample it back), with hf/mine moved into a temporary folder.
Run: python -m pytest tests/test_readme.py
"""

import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO


def readme_commands(pattern):
    """The lines of the README's code blocks that match pattern, their trailing # comments cut."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"^```[a-z]*\n(.*?)^```", f.read(), re.M | re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    return [re.sub(r"\s+# .*$", "", line).strip() for line in lines if re.search(pattern, line)]


@pytest.mark.slow
def test_the_hugging_face_round_trip_runs_as_written(tmp_path):
    commands = readme_commands(r"hf/mine")
    commands = [c for c in commands if "--push_to_hub" not in c]  # needs a login and the network
    assert len(commands) == 3, f"expected the export, the pipeline and the sample commands: {commands}"
    hf_dir = str(tmp_path / "mine")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8", HF_HUB_OFFLINE="1")
    for command in commands:
        argv = [sys.executable if a == "python" else a.replace("hf/mine", hf_dir) for a in shlex.split(command)]
        argv = [a for a in argv if a != "--push_to_hub"]
        if "sample.py" in command:
            argv += ["--num_samples=1", "--max_new_tokens=20"]  # the README's 10 x 500 is the same code, longer
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8",
                              timeout=600)
        assert proc.returncode == 0, f"the README's `{command}` failed on a CPU:\n{proc.stderr[-1500:]}"
        assert proc.stdout.strip(), f"`{command}` printed nothing"
