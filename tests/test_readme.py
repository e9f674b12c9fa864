"""README.md's snippets run as written: every ```bash block that names `xdlm` and every ```python block, in order,
offline, in a scratch folder holding the repository's recipes/ and data/.

Two documented departures from the text:
- the quickstart trains for a few steps (SHORTENED), so that its model, outputs/quickstart, exists in a minute;
- `xdlm` is `python -m llada_xdlm` of this checkout (a shim first on PATH), whether or not the console script is
  installed.
A block that cannot run here (the Hub, GPUs, installing packages) is preceded by `<!-- not run: reason -->`.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"(?:<!-- not run: (?P<reason>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)```", re.S)
SHORTENED = {"xdlm train recipes/quickstart.yaml": "xdlm train recipes/quickstart.yaml --max_steps 4"}


def readme_blocks() -> list[dict]:
    """Every fenced block: language, code, and the reason it is not run (None: it is run)."""
    return [m.groupdict() for m in FENCE.finditer((REPO / "README.md").read_text())]


def runnable(block: dict) -> bool:
    return block["reason"] is None and (block["lang"] == "python" or (block["lang"] == "bash" and
                                                                       re.search(r"^xdlm ", block["code"], re.M)))


def test_every_block_the_tests_skip_says_why_and_the_quickstart_blocks_run():
    blocks = readme_blocks()
    assert all(b["reason"].strip() for b in blocks if b["reason"] is not None)
    run = [b["code"] for b in blocks if runnable(b)]
    assert run[0].strip() == "xdlm train recipes/quickstart.yaml"  # first: the later blocks use its model
    assert any("xdlm sample --model outputs/quickstart" in code for code in run)
    assert any(b["lang"] == "python" for b in blocks if runnable(b))


@pytest.mark.slow
def test_readme_commands_and_python_run_on_the_quickstart_model(tmp_path):
    """~2 minutes on 2 busy cores: a 4-step quickstart, then each command in its own process."""
    for name in ("recipes", "data"):
        (tmp_path / name).symlink_to(REPO / name)
    shim = tmp_path / "bin" / "xdlm"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m llada_xdlm "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{shim.parent}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               TOKENIZERS_PARALLELISM="false")
    unused = dict(SHORTENED)
    for block in filter(runnable, readme_blocks()):
        code = block["code"]
        for written, shortened in SHORTENED.items():
            if written in code:
                code = code.replace(written, shortened)
                unused.pop(written, None)
        command = ["bash", "-euo", "pipefail", "-c", code] if block["lang"] == "bash" else [sys.executable, "-c", code]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"README block failed:\n{block['code']}\n{done.stdout[-2000:]}{done.stderr[-4000:]}"
    assert not unused, f"README no longer contains {sorted(unused)}: update SHORTENED"
    assert (tmp_path / "outputs" / "quickstart" / "model.safetensors").is_file()
    assert (tmp_path / "staged" / "quickstart" / "README.md").is_file()
