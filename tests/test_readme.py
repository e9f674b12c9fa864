"""README.md's snippets run as written: every ```bash block that names `xdlm` and every ```python block, in order,
offline, in a scratch folder holding the repository's recipes/ and data/. The quickstart trains in full, as
written; the tests after the run read what it printed and the model it saved (one training for all of them).

One documented departure from the text: `xdlm` is `python -m llada_xdlm` of this checkout (a shim first on PATH),
whether or not the console script is installed. A block that cannot run here (the Hub, GPUs, installing packages)
is preceded by `<!-- not run: reason -->`. Whatever README's commands (and docs/gpu.md's GPU check) write inside the
repository is ignored by git.
"""

import configparser
import json
import math
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoTokenizer

from llada_xdlm.checkpoint import load_checkpoint
from llada_xdlm.cli import COMMANDS
from llada_xdlm.sampling import checkpoint_sampler, generate

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"(?:<!-- not run: (?P<reason>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)```", re.S)
FIRST = 16  # generated tokens after each prompt that are compared


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


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> dict:
    """Every runnable block in order, each in its own process, stopping at the first failure: {folder, runs: [(block
    code, CompletedProcess)]}. About 4 minutes on 2 cores, nearly all of it the quickstart's training."""
    folder = tmp_path_factory.mktemp("readme")
    for name in ("recipes", "data"):
        (folder / name).symlink_to(REPO / name)
    shim = folder / "bin" / "xdlm"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m llada_xdlm "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{shim.parent}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               TOKENIZERS_PARALLELISM="false")
    runs = []
    for block in filter(runnable, readme_blocks()):
        code = block["code"]
        command = ["bash", "-euo", "pipefail", "-c", code] if block["lang"] == "bash" else [sys.executable, "-c", code]
        runs.append((code, subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=900)))
        if runs[-1][1].returncode != 0:
            break
    return dict(folder=folder, runs=runs)


@pytest.mark.slow
def test_readme_commands_and_python_run_on_the_quickstart_model(readme_run):
    for code, done in readme_run["runs"]:
        assert done.returncode == 0, f"README block failed:\n{code}\n{done.stdout[-2000:]}{done.stderr[-4000:]}"
    assert len(readme_run["runs"]) == len(list(filter(runnable, readme_blocks())))
    assert (readme_run["folder"] / "outputs" / "quickstart" / "model.safetensors").is_file()
    assert (readme_run["folder"] / "staged" / "quickstart" / "README.md").is_file()


def quickstart_output(readme_run) -> str:
    code, done = readme_run["runs"][0]
    assert code.strip() == "xdlm train recipes/quickstart.yaml" and done.returncode == 0, done.stderr[-4000:]
    return done.stdout


@pytest.mark.slow
def test_quickstart_bound_is_at_least_30_percent_below_the_unigram_baseline_it_prints(readme_run):
    line = re.search(r"^nelbo_after: ([\d.]+)  \(PPL bound ([\d.]+), (\d+)% (below|above) the unigram baseline "
                     r"([\d.]+)\)$", quickstart_output(readme_run), re.M)
    assert line, quickstart_output(readme_run)[-3000:]
    nelbo, bound, unigram = float(line[1]), float(line[2]), float(line[5])
    assert bound == pytest.approx(math.exp(nelbo), abs=0.05)
    # The baseline, counted here from the text: add-one frequencies of the training tokens (documents joined by EOS)
    # scoring every validation token the bound scores (the validation stream cut into whole blocks of block_size).
    tokenizer = AutoTokenizer.from_pretrained(readme_run["folder"] / "outputs" / "quickstart")
    recipe = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text())

    def stream(split):  # every document's ids followed by EOS, documents concatenated
        texts = [json.loads(row)["text"] for row in (REPO / "data" / "stdlib_docs" / f"{split}.jsonl").open()]
        eos = tokenizer.eos_token_id
        return [i for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] for i in [*ids, eos]]

    counts = Counter(stream("train"))
    validation = stream("validation")
    validation = validation[: len(validation) // recipe["block_size"] * recipe["block_size"]]
    total = sum(counts.values()) + len(tokenizer)
    expected = math.exp(-sum(math.log((counts[i] + 1) / total) for i in validation) / len(validation))
    # printed to 0.1; the training blocks cut short (1% of them) drop a few tokens from the counts
    assert abs(unigram - expected) <= 0.05 + 2e-3 * expected, (unigram, expected)
    assert bound <= 0.7 * unigram and line[4] == "below", line[0]


@pytest.mark.slow
def test_quickstart_model_predicts_other_first_tokens_after_other_prompts(readme_run):
    """The model listens to its prompt: its sampler, with the settings the recipe saved but greedy (temperature 0)
    and the same noise, continues the recipe's two sample prompts with different first FIRST tokens. (A model that
    ignores its context continues both alike: a 2048-id BPE model of this size, trained as long, sits at the unigram
    baseline and writes ' the the the ...' after both.)"""
    model, tokenizer = load_checkpoint(str(readme_run["folder"] / "outputs" / "quickstart"))
    prompts = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text())["sample_prompts"]
    assert len(prompts) == 2
    greedy = checkpoint_sampler(model.config, temperature=0.0)
    first = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        out = generate(model, ids, config=greedy, generator=torch.Generator().manual_seed(0))
        first.append(out[0, ids.shape[1] : ids.shape[1] + FIRST])  # [FIRST]
    assert not torch.equal(first[0], first[1]), [tokenizer.decode(f) for f in first]


# ---- what the README's commands leave in the repository ------------------------------------------------------------

OUTPUT_OPTIONS = ("--out", "--output", "--output_dir", "--work_dir", "--output_path")  # every command's output flag


def shown_commands() -> list[list[str]]:
    """Every command README.md shows, in ```bash blocks (run or not) and in `inline code` starting with xdlm, and the
    commands of docs/gpu.md's blocks (the GPU check), as argument lists."""
    lines = []
    for doc in (REPO / "README.md", REPO / "docs" / "gpu.md"):
        text = doc.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            lines += block.replace("\\\n", " ").splitlines()
        if doc.name == "README.md":
            lines += re.findall(r"`(xdlm [^`]+)`", text)
    commands = []
    for line in lines:
        words = shlex.split(line, comments=True)
        command = []
        for word in words + ["&&"]:
            if word in ("&&", ";", "||", "|"):
                if command:
                    commands.append(command)
                command = []
            else:
                command.append(word)
    return commands


def placeholder(word: str) -> bool:
    return re.fullmatch(r"[A-Z_]+(\.yaml)?", word) is not None


def written_paths(command: list[str]) -> list[str]:
    """What a command writes inside the folder it runs in, relative to it; a trailing / marks a folder."""
    def option(name: str) -> str | None:
        return command[command.index(name) + 1] if name in command else None

    program, *args = command
    if program in ("python", "python3") and args[:2] == ["-m", "venv"]:
        return [args[2] + "/"]
    if program in ("python", "python3") and args[:2] == ["-m", "pytest"]:
        return [".pytest_cache/"]
    if program == "pip" and args[:2] == ["install", "-e"]:
        setup = configparser.ConfigParser()
        setup.read(REPO / "setup.cfg")
        return [setup["metadata"]["name"].replace("-", "_") + ".egg-info/", "build/"]
    if program != "xdlm" or not args or args[0].startswith("-"):
        return []
    name, args = args[0], args[1:]
    if placeholder(name) or (name == "train" and placeholder(args[0])):  # `xdlm COMMAND --help`, `xdlm train RECIPE`
        return []
    assert name in COMMANDS, f"README shows `xdlm {name}`, which is no command"
    given = [option(o) for o in OUTPUT_OPTIONS if option(o)]
    if name == "train":
        recipe = yaml.safe_load((REPO / args[0]).read_text())
        return [(given or [recipe["output_dir"]])[0] + "/"] + ([recipe["pretokenized_dir"] + "/"]
                                                              if recipe.get("pretokenized_dir") else [])
    if name == "check-gpu":
        return [args[0] + "/"]
    if name == "reproduce-small":  # it also rewrites the tracked docs/small_scale.md and plots: its purpose
        return [(given or ["outputs/reproduce_small_" + ("smoke" if "--smoke" in args else "full")])[0] + "/"]
    if name == "plot-trajectory":
        prefix = (given or ["trajectory"])[0]
        return [prefix + ".html", prefix + ".png"]
    if name in ("sample", "ppl", "gen-ppl", "fid"):  # a JSON file, only where --output is given
        return given
    return [path + "/" for path in given]  # push, paper-grid, prepare-images, eval: a folder where given


def test_readme_commands_shown_cover_the_quickstart_and_the_gpu_check():
    commands = [" ".join(c) for c in shown_commands()]
    assert "xdlm train recipes/quickstart.yaml" in commands
    assert ("xdlm push --model outputs/quickstart --repo you/xdlm-quickstart --dry_run --out staged/quickstart"
            in commands)
    assert "xdlm check-gpu gpu_check_tiny --tiny" in commands and "xdlm check-gpu gpu_check" in commands
    assert "python3 -m venv .venv" in commands
    assert "xdlm paper-grid --output results/grid --xdlm PATH" in commands


def test_git_ignores_everything_the_readme_commands_write():
    """`git status` stays clean after README's commands: each path they write inside the repository is ignored (a
    file inside a written folder stands for the folder), and no tracked file lies there."""
    written = sorted({path for command in shown_commands() for path in written_paths(command)})
    assert {"outputs/quickstart/", "staged/quickstart/", "gpu_check_tiny/", "gpu_check/", "results/grid/",
            ".venv/"} <= set(written)
    probes = [path + "gpu_report.json" if path.endswith("/") else path for path in written]
    ignored = subprocess.run(["git", "check-ignore", "--stdin"], cwd=REPO, input="\n".join(probes), text=True,
                             capture_output=True)
    assert ignored.returncode in (0, 1), f"git check-ignore failed (run from a git checkout): {ignored.stderr}"
    assert sorted(set(probes) - set(ignored.stdout.splitlines())) == []
    tracked = subprocess.run(["git", "ls-files", *written], cwd=REPO, text=True, capture_output=True, check=True)
    assert tracked.stdout == ""
