"""The paper grid: every (model, steps, task) cell through `xdlm paper-grid`, resumable
after a kill, written as a table and a plot. Tiny model, offline fixture tasks."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llada_xdlm.evaluation.paper_grid import GridRow, main, markdown_table, parse_row, read_scores

REPO = Path(__file__).resolve().parents[1]
FIXTURE_TASKS = REPO / "tests" / "fixtures" / "eval_tasks"
TASKS = ["xdlm_fixture_gsm8k", "xdlm_fixture_mbpp"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def grid_command(checkpoint, output):
    return [sys.executable, "-m", "llada_xdlm", "paper-grid", "--output", str(output),
            "--model", f"base={checkpoint}:0", "--model", f"xdlm={checkpoint}:0.5", "--steps", "2", "4",
            "--tasks", *TASKS, "--include_path", str(FIXTURE_TASKS),
            "--model_args", "gen_length=8,block_length=8,dtype=float32,max_length=256,device=cpu"]


def cells(output):
    return sorted(p.relative_to(output / "cells").as_posix() for p in (output / "cells").rglob("*.json"))


@pytest.mark.slow
def test_grid_runs_every_cell_resumes_after_a_kill_and_writes_table_and_plot(checkpoint, tmp_path):
    output = tmp_path / "grid"
    env = {**os.environ, **OFFLINE}
    first = subprocess.Popen(grid_command(checkpoint, output), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not (output / "cells").exists() or not cells(output):
        assert first.poll() is None and time.time() < deadline, "the grid ended or stalled before its first cell"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the grid and the lm-eval run under it, mid-grid
    first.wait()
    done_before = {c: (output / "cells" / c).read_text() for c in cells(output)}
    assert 0 < len(done_before) < 8

    second = subprocess.run(grid_command(checkpoint, output), env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    expected = [f"{row}/steps{s}/{t}.json" for row in ("base", "xdlm") for s in (2, 4) for t in TASKS]
    assert cells(output) == sorted(expected)
    for cell, text in done_before.items():  # finished cells are not run again
        assert (output / "cells" / cell).read_text() == text
    assert second.stdout.count("[paper grid] base steps=") + second.stdout.count("[paper grid] xdlm steps=") \
        == 4 - sum(1 for c in done_before if c.endswith(f"{TASKS[-1]}.json"))  # runs only for unfinished pairs

    records = [json.loads((output / "cells" / c).read_text()) for c in expected]
    table = (output / "grid.md").read_text()
    for r in records:  # each cell's score is the lm-eval metric in percent, and the table shows it
        assert 0.0 <= r["score"] <= 100.0
        line = next(ln for ln in table.splitlines() if ln.startswith(f"| {r['row']} | {r['k1']:g} | {r['steps']} |"))
        assert f"{r['score']:.1f}" in line
        assert r["tokens_per_forward"] == 8 / r["steps"]  # batch 1: gen_length 8 tokens in `steps` forwards
    assert "| xdlm | 4 | 2.00 |" in table  # the speed table
    assert (output / "grid.png").stat().st_size > 10_000


def test_table_puts_the_papers_numbers_beside_ours():
    rows = [GridRow("llada-8b-base", "GSAI-ML/LLaDA-8B-Base", 0.0), GridRow("mine", "out", 0.1)]
    scores = {"llada-8b-base": {"paper_mbpp": {32: 7.25, 64: 8.0}}, "mine": {"paper_mbpp": {32: 12.0}}}
    table = markdown_table(scores, rows, [32, 64, 256], ["paper_mbpp", "paper_gsm8k"])
    lines = table.splitlines()
    assert lines[0] == "| model | k1 | steps | MBPP | GSM8K |"
    # published (XDLM paper): base at 32 steps MBPP 6.8, GSM8K 42.7; at 256 steps MBPP 40.2, GSM8K 70.0
    assert lines[2] == "| llada-8b-base | 0 | 32 | 7.2 (6.8) |  (42.7) |"
    assert lines[3] == "| llada-8b-base | 0 | 64 | 8.0 |  |"
    assert lines[4] == "| llada-8b-base | 0 | 256 |  (40.2) |  (70.0) |"
    assert lines[5] == "| mine | 0.1 | 32 | 12.0 |  |"
    assert lines[6] == "| mine | 0.1 | 64 |  |  |"


@pytest.mark.parametrize("spec, expected", [
    ("mine=outputs/run:0.3", GridRow("mine", "outputs/run", 0.3)),
    ("xdlm-600=outputs/run", GridRow("xdlm-600", "outputs/run", 0.1)),
    ("base=GSAI-ML/LLaDA-8B-Base", GridRow("base", "GSAI-ML/LLaDA-8B-Base", 0.0)),
    ("c=C:/runs/x:0", GridRow("c", "C:/runs/x", 0.0)),
])
def test_model_rows_parse(spec, expected):
    assert parse_row(spec) == expected


def test_a_row_without_a_checkpoint_is_refused():
    with pytest.raises(ValueError, match="NAME=CHECKPOINT"):
        parse_row("only-a-name")


# Stands in for `python -m llada_xdlm.eval ...` in a grid run: writes what lm-eval and the model would, with an MBPP
# breakdown made from the steps (10 rows: passed = steps / 16, wrong answers 2, syntax errors 3, the rest empty).
FAKE_LM_EVAL = """
import json, os, sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
model_args = dict(kv.split("=", 1) for kv in args["--model_args"].split(","))
steps = int(model_args["steps"])
passed = steps // 16
counts = {"passed": passed, "wrong_answer": 2, "runtime_error": 0, "syntax_error": 3, "timeout": 0,
          "empty": 5 - passed}
results = {}
for task in args["--tasks"].split(","):
    if task == "paper_mbpp":
        results[task] = {"alias": task, **{f"{k},none": v for k, v in counts.items()},
                         "pass_at_1,none": passed / 10, "pass_at_1_stderr,none": "N/A"}
    else:
        results[task] = {"alias": task, "accuracy,none": 0.5, "accuracy_stderr,none": 0.1}
os.makedirs(args["--output_path"], exist_ok=True)
with open(os.path.join(args["--output_path"], "results_2026.json"), "w") as f:
    json.dump({"results": results}, f)
with open(model_args["stats_path"], "w") as f:
    json.dump({"generated_tokens": 256, "forwards": steps, "seconds": 1.0}, f)
"""


def png_height(path) -> int:
    return int.from_bytes(path.read_bytes()[20:24], "big")  # the IHDR chunk


def test_mbpp_failure_breakdown_in_each_cell_the_table_and_the_plot(tmp_path, capsys):
    main(["--output", str(tmp_path), "--model", "base=base-ckpt:0", "--model", "xdlm=xdlm-ckpt:0.1",
          "--steps", "32", "64", "--tasks", "paper_mbpp", "paper_gsm8k",
          "--launcher", shlex.join([sys.executable, "-c", FAKE_LM_EVAL])])
    record = json.loads((tmp_path / "cells" / "xdlm" / "steps64" / "paper_mbpp.json").read_text())
    assert record["outcomes"] == {"passed": 4, "wrong_answer": 2, "runtime_error": 0, "syntax_error": 3,
                                  "timeout": 0, "empty": 1}
    assert record["score"] == pytest.approx(40.0)
    assert "outcomes" not in json.loads((tmp_path / "cells" / "xdlm" / "steps64" / "paper_gsm8k.json").read_text())

    table = (tmp_path / "grid.md").read_text()
    assert "\n".join([
        "MBPP: rows by outcome",
        "",
        "| model | k1 | steps | passed | wrong answer | runtime error | syntax error | timeout | empty |",
        "|---|---|---|---|---|---|---|---|---|",
        "| base | 0 | 32 | 2 | 2 | 0 | 3 | 0 | 3 |",
        "| base | 0 | 64 | 4 | 2 | 0 | 3 | 0 | 1 |",
        "| xdlm | 0.1 | 32 | 2 | 2 | 0 | 3 | 0 | 3 |",
        "| xdlm | 0.1 | 64 | 4 | 2 | 0 | 3 | 0 | 1 |",
    ]) in table
    assert table in capsys.readouterr().out
    assert png_height(tmp_path / "grid.png") == 2 * 3 * 120  # a row of score panels, a row of bars; 3 in at 120 dpi


def test_score_is_the_task_metric_not_an_outcome_count(tmp_path):
    entry = {"alias": "paper_mbpp", "passed,none": 3, "wrong_answer,none": 7, "runtime_error,none": 0,
             "syntax_error,none": 0, "timeout,none": 0, "empty,none": 0, "pass_at_1,none": 0.3}
    (tmp_path / "results_1.json").write_text(json.dumps({"results": {"paper_mbpp": entry}}))
    assert read_scores(str(tmp_path), ["paper_mbpp"]) == {"paper_mbpp": pytest.approx(30.0)}


ECHO_LM_EVAL = """
import json, os, sys
args = sys.argv[1:]
model_args = dict(kv.split("=", 1) for kv in args[args.index("--model_args") + 1].split(","))
out = args[args.index("--output_path") + 1]
os.makedirs(out, exist_ok=True)
tasks = args[args.index("--tasks") + 1].split(",")
json.dump({"results": {t: {"acc,none": 0.5} for t in tasks}}, open(os.path.join(out, "results_1.json"), "w"))
json.dump({"generated_tokens": 8, "forwards": 4, "seconds": 1.0}, open(model_args["stats_path"], "w"))
json.dump(model_args, open(os.path.join(out, "model_args.json"), "w"))
"""


@pytest.mark.parametrize("compat", [None, "xdlm-authors"])
def test_grid_passes_the_compat_setting_to_every_run_and_records_it(tmp_path, compat):
    from llada_xdlm.evaluation.paper_grid import main

    fake = tmp_path / "fake_lm_eval.py"  # stands for `python -m llada_xdlm.eval`: echoes its model_args
    fake.write_text(ECHO_LM_EVAL)
    output = tmp_path / "grid"
    main(["--output", str(output), "--model", "m=ckpt:0.1", "--steps", "4", "--tasks", "t1",
          "--launcher", f"{sys.executable} {fake}", *(["--compat", compat] if compat else [])])
    expected = compat or "none"
    (args_file,) = output.rglob("model_args.json")
    assert json.loads(args_file.read_text())["compat"] == expected
    assert json.loads((output / "cells" / "m" / "steps4" / "t1.json").read_text())["compat"] == expected


def test_grid_refuses_to_reuse_cells_sampled_with_another_compat(tmp_path):
    from llada_xdlm.evaluation.paper_grid import cell_path, run_grid

    row = GridRow("m", "ckpt", 0.1)
    path = Path(cell_path(str(tmp_path), row, 4, "t1"))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"score": 50.0}))  # a cell of a run that predates the setting: compat none
    with pytest.raises(ValueError, match="compat=none, this grid asks for compat=xdlm-authors"):
        run_grid([row], [4], ["t1", "t2"], str(tmp_path), {"compat": "xdlm-authors"}, launcher=["/nonexistent"])
