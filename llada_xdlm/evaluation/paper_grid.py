"""The XDLM paper's evaluation grid: every model x sampling steps x benchmark, resumable, as one table and one plot.

    xdlm paper-grid --output results/paper_grid \
        --mdlm outputs/llada-mdlm/checkpoint-600 --xdlm outputs/llada-xdlm/checkpoint-600

The authors' grid (LLaDA-XDLM, `opencompass_configs/llada_base_cpt_models.py`): gen_length 256, one block of 256,
steps 32 / 64 / 128 / 256, for LLaDA-8B-Base sampled with k1 0 and with k1 0.1, and the MDLM and XDLM continued-
pretraining checkpoints of step 600 sampled with k1 0 and 0.1; five benchmarks (MBPP, GSM8K, HumanEval, MATH, BBH)
with their prompts and scoring (`llada_xdlm.evaluation.paper`, tasks in eval/paper/). Every cell runs the xdlm
lm-eval model in mode "paper" in a subprocess: `accelerate launch` over all visible GPUs when there are several
(lm-eval shards the requests), plain python otherwise. A finished cell leaves `cells/<row>/steps<S>/<task>.json`;
a rerun skips it, so a killed grid resumes where it stopped. `--compat xdlm-authors` samples with the authors'
own sampler instead of ours (docs/evaluation.md); each cell records which, and a folder holds one. The table
(`grid.md`) and the plot (`grid.png`) put the paper's published numbers beside ours where known (stars in the
plot), and show MBPP's failure breakdown: per cell, its rows passed / wrong answer / runtime error / syntax error /
timeout / empty (also in the cell's JSON).
"""

import argparse
import glob
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass

from ..cli import UsageError
from .paper import CODE_OUTCOMES

PAPER_STEPS = (32, 64, 128, 256)
PAPER_TASKS = ("paper_mbpp", "paper_gsm8k", "paper_humaneval", "paper_math", "paper_bbh")
TASK_TITLES = {"paper_mbpp": "MBPP", "paper_gsm8k": "GSM8K", "paper_humaneval": "HumanEval", "paper_math": "MATH",
               "paper_bbh": "BBH"}
EVAL_TASKS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                              "eval", "paper")
BASE = "GSAI-ML/LLaDA-8B-Base"
OUTCOME_TITLES = {"passed": "passed", "wrong_answer": "wrong answer", "runtime_error": "runtime error",
                  "syntax_error": "syntax error", "timeout": "timeout", "empty": "empty"}


@dataclass(frozen=True)
class GridRow:
    """One model line of the grid: a name, the checkpoint lm-eval loads, and the k1 it is sampled with."""

    name: str
    pretrained: str
    k1: float


# Published scores in percent, (row, task, steps) -> score: the XDLM paper's LLaDA-8B results at 32 steps (also the
# figure of the LLaDA-XDLM README: LLaDA-8B-Base's five "baseline" values, MBPP for all four rows) and LLaDA-8B-Base
# at 256 steps. Cells the paper does not state as numbers stay blank.
PAPER_SCORES = {
    ("llada-8b-base", "paper_gsm8k", 32): 42.7,
    ("llada-8b-base", "paper_math", 32): 24.5,
    ("llada-8b-base", "paper_humaneval", 32): 4.8,
    ("llada-8b-base", "paper_mbpp", 32): 6.8,
    ("llada-8b-base", "paper_bbh", 32): 5.5,
    ("llada-8b-base-k0.1", "paper_mbpp", 32): 5.4,
    ("mdlm-cpt-600", "paper_mbpp", 32): 4.4,
    ("xdlm-cpt-600", "paper_mbpp", 32): 15.0,
    ("llada-8b-base", "paper_gsm8k", 256): 70.0,
    ("llada-8b-base", "paper_mbpp", 256): 40.2,
}


def default_rows(mdlm: str | None, xdlm: str | None) -> list[GridRow]:
    """The authors' four rows; a continued-pretraining row is left out when its checkpoint is not given."""
    rows = [GridRow("llada-8b-base", BASE, 0.0), GridRow("llada-8b-base-k0.1", BASE, 0.1)]
    if mdlm:
        rows.append(GridRow("mdlm-cpt-600", mdlm, 0.0))
    if xdlm:
        rows.append(GridRow("xdlm-cpt-600", xdlm, 0.1))
    return rows


def parse_row(spec: str) -> GridRow:
    """`NAME=PATH` or `NAME=PATH:K1` (k1 defaults to 0.1 for names containing "xdlm", else 0)."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise UsageError(f"--model {spec!r}: write NAME=CHECKPOINT or NAME=CHECKPOINT:K1, e.g. "
                         f"xdlm-cpt-600=outputs/llada-xdlm/checkpoint-600:0.1.")
    path, sep, k1 = rest.rpartition(":")
    if not sep or not _is_number(k1):
        path, k1 = rest, "0.1" if "xdlm" in name else "0"
    return GridRow(name, path, float(k1))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def cell_path(output: str, row: GridRow, steps: int, task: str) -> str:
    return os.path.join(output, "cells", row.name, f"steps{steps}", f"{task}.json")


def lm_eval_command(row: GridRow, steps: int, tasks: list[str], run_dir: str, model_args: dict, include_paths,
                    launcher: list[str], limit: float | None) -> list[str]:
    """The lm-eval invocation of one (row, steps) run: mode "paper", gen_length 256, one block, greedy."""
    args = {"pretrained": row.pretrained, "mode": "paper", "steps": steps, "gen_length": 256, "block_length": 256,
            "temperature": 0.0, "k1": row.k1, "dtype": "bfloat16",
            "stats_path": os.path.join(run_dir, "generation_stats.json"), **model_args}
    command = [*launcher, "-m", "llada_xdlm.eval", "--model", "xdlm",
               "--model_args", ",".join(f"{k}={v}" for k, v in args.items()), "--tasks", ",".join(tasks),
               "--output_path", run_dir, "--confirm_run_unsafe_code"]
    for path in include_paths:
        command += ["--include_path", path]
    if limit is not None:
        command += ["--limit", str(limit)]
    return command


def _task_results(run_dir: str, tasks: list[str]) -> dict[str, dict]:
    """Each task's entry in the newest lm-eval results file under run_dir (a group's aggregate for a group task)."""
    files = glob.glob(os.path.join(run_dir, "**", "results_*.json"), recursive=True)
    if not files:
        raise RuntimeError(f"lm-eval wrote no results_*.json under {run_dir}; see its output above.")
    with open(max(files, key=os.path.getmtime), encoding="utf-8") as f:
        results = json.load(f)
    entries = {}
    for task in tasks:
        entries[task] = results.get("groups", {}).get(task) or results["results"].get(task)
        if entries[task] is None:
            raise RuntimeError(f"task {task} is missing from lm-eval's results in {run_dir}.")
    return entries


def read_scores(run_dir: str, tasks: list[str]) -> dict[str, float]:
    """Each task's score in percent from the newest lm-eval results under run_dir: its first metric that is
    neither a standard error nor an outcome count of the failure breakdown."""
    scores = {}
    for task, entry in _task_results(run_dir, tasks).items():
        metric = next(k for k, v in entry.items() if "," in k and "_stderr" not in k and isinstance(v, (int, float))
                      and k.split(",")[0] not in CODE_OUTCOMES)
        scores[task] = 100.0 * entry[metric]
    return scores


def read_outcomes(run_dir: str, tasks: list[str]) -> dict[str, dict[str, int]]:
    """The failure breakdown of the tasks that report one (paper_mbpp): {task: {outcome: rows}}, CODE_OUTCOMES."""
    breakdowns = {}
    for task, entry in _task_results(run_dir, tasks).items():
        counts = {name: entry.get(f"{name},none") for name in CODE_OUTCOMES}
        if all(isinstance(count, (int, float)) for count in counts.values()):
            breakdowns[task] = {name: int(count) for name, count in counts.items()}
    return breakdowns


def read_speed(run_dir: str) -> dict[str, float]:
    """Tokens per forward and tokens/s of a run, summed over its processes' generation statistics."""
    totals = {"generated_tokens": 0, "forwards": 0, "seconds": 0.0}
    for path in glob.glob(os.path.join(run_dir, "generation_stats.json*")):
        with open(path, encoding="utf-8") as f:
            stats = json.load(f)
        for key in totals:
            totals[key] += stats[key]
    processes = max(len(glob.glob(os.path.join(run_dir, "generation_stats.json*"))), 1)
    return {"tokens_per_forward": totals["generated_tokens"] / max(totals["forwards"], 1),
            "tokens_per_second": totals["generated_tokens"] / max(totals["seconds"] / processes, 1e-9)}


def run_grid(rows: list[GridRow], steps_list, tasks, output: str, model_args: dict | None = None,
             include_paths=(EVAL_TASKS_DIR,), launcher: list[str] | None = None, limit: float | None = None) -> dict:
    """Run every missing cell; return collect()'s cell records over all finished cells. Each cell records the
    sampler's `compat` (model_args, default "none"); finished cells sampled with another are refused up front."""
    launcher = launcher or default_launcher()
    compat = (model_args or {}).get("compat", "none")
    _refuse_other_compat(output, rows, steps_list, tasks, compat)
    env = {**os.environ, "HF_ALLOW_CODE_EVAL": "1"}  # MBPP / HumanEval run generated programs in the sandbox
    for row in rows:
        for steps in steps_list:
            missing = [t for t in tasks if not os.path.exists(cell_path(output, row, steps, t))]
            if not missing:
                continue
            run_dir = os.path.join(output, "runs", row.name, f"steps{steps}", time.strftime("%Y%m%d-%H%M%S"))
            command = lm_eval_command(row, steps, missing, run_dir, model_args or {}, include_paths, launcher, limit)
            print(f"[paper grid] {row.name} steps={steps}: {shlex.join(command)}", flush=True)
            start = time.time()
            subprocess.run(command, env=env, check=True)
            seconds = time.time() - start
            speed = read_speed(run_dir)
            outcomes = read_outcomes(run_dir, missing)
            for task, score in read_scores(run_dir, missing).items():
                path = cell_path(output, row, steps, task)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                record = {"row": row.name, "pretrained": row.pretrained, "k1": row.k1, "steps": steps,
                          "compat": compat, "task": task, "score": score, "seconds": seconds, "tasks_in_run": missing,
                          "run_dir": run_dir, **speed}
                if task in outcomes:
                    record["outcomes"] = outcomes[task]
                with open(path + ".tmp", "w", encoding="utf-8") as f:
                    json.dump(record, f, indent=1)
                os.replace(path + ".tmp", path)  # a cell exists only once complete
    return collect(output, rows, steps_list, tasks)


def _refuse_other_compat(output: str, rows, steps_list, tasks, compat: str) -> None:
    """A grid folder holds one sampler: a finished cell sampled with another compat (none when unrecorded) would
    be reused, so it is an error."""
    for row in rows:
        for steps in steps_list:
            for task in tasks:
                path = cell_path(output, row, steps, task)
                if not os.path.exists(path):
                    continue
                with open(path, encoding="utf-8") as f:
                    theirs = json.load(f).get("compat", "none")
                if theirs != compat:
                    raise UsageError(f"{path} was sampled with compat={theirs}, this grid asks for compat={compat}; "
                                     f"write to another --output (or delete that folder's cells).")


def default_launcher() -> list[str]:
    """accelerate over all GPUs when there are several (data parallel), else this interpreter."""
    import torch

    n = torch.cuda.device_count()
    if n > 1:
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n)]
    return [sys.executable]


def collect(output: str, rows, steps_list, tasks) -> dict:
    """{row name: {task: {steps: cell record}}} over the finished cells."""
    cells: dict = {}
    for row in rows:
        for steps in steps_list:
            for task in tasks:
                path = cell_path(output, row, steps, task)
                if os.path.exists(path):
                    with open(path, encoding="utf-8") as f:
                        cells.setdefault(row.name, {}).setdefault(task, {})[steps] = json.load(f)
    return cells


def scores_of(cells: dict) -> dict:
    """{row name: {task: {steps: score}}} from collect()'s cell records."""
    return {row: {task: {steps: c["score"] for steps, c in by_steps.items()} for task, by_steps in tasks.items()}
            for row, tasks in cells.items()}


def outcomes_of(cells: dict) -> dict:
    """{task: {row name: {steps: {outcome: rows}}}} over the cells that hold a failure breakdown."""
    outcomes: dict = {}
    for row, tasks in cells.items():
        for task, by_steps in tasks.items():
            for steps, cell in by_steps.items():
                if "outcomes" in cell:
                    outcomes.setdefault(task, {}).setdefault(row, {})[steps] = cell["outcomes"]
    return outcomes


def outcome_table(outcomes: dict, rows, steps_list) -> str:
    """Per task with a failure breakdown: one line per (model, steps), the number of rows of each outcome."""
    lines = []
    for task, by_row in outcomes.items():
        lines += [f"{TASK_TITLES.get(task, task)}: rows by outcome", "",
                  "| model | k1 | steps | " + " | ".join(OUTCOME_TITLES[o] for o in CODE_OUTCOMES) + " |",
                  "|" + "---|" * (3 + len(CODE_OUTCOMES))]
        for row in rows:
            for steps in steps_list:
                counts = by_row.get(row.name, {}).get(steps)
                if counts is not None:
                    lines.append(f"| {row.name} | {row.k1:g} | {steps} | "
                                 + " | ".join(str(counts[o]) for o in CODE_OUTCOMES) + " |")
        lines.append("")
    return "\n".join(lines)


def speed_table(cells: dict, rows, steps_list) -> str:
    """Tokens per forward and tokens/s per (model, steps), from the runs' generation statistics."""
    lines = ["| model | steps | tokens / forward | tokens / s |", "|---|---|---|---|"]
    for row in rows:
        for steps in steps_list:
            records = [by_steps[steps] for by_steps in cells.get(row.name, {}).values() if steps in by_steps]
            if records:
                r = records[0]
                lines.append(f"| {row.name} | {steps} | {r['tokens_per_forward']:.2f} | {r['tokens_per_second']:.1f} |")
    return "\n".join(lines) + "\n"


def markdown_table(scores: dict, rows, steps_list, tasks) -> str:
    """One line per (model, steps), one column per task: ours, and the paper's number in brackets where known."""
    header = "| model | k1 | steps | " + " | ".join(TASK_TITLES.get(t, t) for t in tasks) + " |"
    lines = [header, "|" + "---|" * (3 + len(tasks))]
    for row in rows:
        for steps in steps_list:
            cells = []
            for task in tasks:
                ours = scores.get(row.name, {}).get(task, {}).get(steps)
                paper = PAPER_SCORES.get((row.name, task, steps))
                text = "" if ours is None else f"{ours:.1f}"
                if paper is not None:
                    text += f" ({paper:.1f})"
                cells.append(text)
            lines.append(f"| {row.name} | {row.k1:g} | {steps} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Scores in percent. In brackets: the paper's published score, where it states one.")
    return "\n".join(lines) + "\n"


def plot(scores: dict, outcomes: dict, rows, steps_list, tasks, path: str) -> None:
    """Score vs steps, one line per model, one panel per task, the paper's points as stars; below them, for each
    task with a failure breakdown, a stacked bar of its rows by outcome per (model, steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    broken_down = [task for task in tasks if task in outcomes]
    fig = plt.figure(figsize=(3.2 * len(tasks), 3.0 * (1 + bool(broken_down))))
    layout = fig.add_gridspec(1 + bool(broken_down), len(tasks))
    axes = [fig.add_subplot(layout[0, i]) for i in range(len(tasks))]
    for ax, task in zip(axes, tasks):
        for i, row in enumerate(rows):
            color = f"C{i}"
            points = sorted(scores.get(row.name, {}).get(task, {}).items())
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], "o-", color=color, label=row.name)
            paper = sorted((s, v) for (name, t, s), v in PAPER_SCORES.items() if (name, t) == (row.name, task))
            if paper:
                ax.plot([s for s, _ in paper], [v for _, v in paper], "*", color=color, markersize=11,
                        label=f"{row.name} (paper)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(steps_list), [str(s) for s in steps_list])
        ax.set_title(TASK_TITLES.get(task, task))
        ax.set_xlabel("sampling steps")
    axes[0].set_ylabel("score (%)")
    axes[-1].legend(fontsize=7, loc="best")
    if broken_down:
        bottom_row = layout[1, :].subgridspec(1, len(broken_down))
        for j, task in enumerate(broken_down):
            ax = fig.add_subplot(bottom_row[0, j])
            bars = [(f"{row.name} s{steps}", counts) for row in rows for steps in steps_list
                    if (counts := outcomes[task].get(row.name, {}).get(steps)) is not None]
            stacked = [0] * len(bars)
            for k, outcome in enumerate(CODE_OUTCOMES):
                heights = [counts[outcome] for _, counts in bars]
                ax.bar(range(len(bars)), heights, bottom=stacked, color=f"C{k}", label=OUTCOME_TITLES[outcome])
                stacked = [b + h for b, h in zip(stacked, heights)]
            ax.set_xticks(range(len(bars)), [label for label, _ in bars], rotation=45, ha="right", fontsize=7)
            ax.set_ylabel("rows")
            ax.set_title(f"{TASK_TITLES.get(task, task)}: rows by outcome")
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`xdlm paper-grid`: run the missing cells, then write grid.md and grid.png."""
    from llada_xdlm.sampling import COMPATS

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder for cells, lm-eval runs, grid.md and grid.png")
    parser.add_argument("--mdlm", help="the MDLM continued-pretraining checkpoint (step 600), sampled with k1 0")
    parser.add_argument("--xdlm", help="the XDLM continued-pretraining checkpoint (step 600), sampled with k1 0.1")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=CHECKPOINT[:K1]",
                        help="rows instead of the authors' four (repeatable), e.g. mine=outputs/run:0.1")
    parser.add_argument("--steps", type=int, nargs="+", default=list(PAPER_STEPS))
    parser.add_argument("--tasks", nargs="+", default=list(PAPER_TASKS))
    parser.add_argument("--model_args", default="",
                        help="extra or overriding xdlm model_args, e.g. dtype=float32,cache=prefix")
    parser.add_argument("--include_path", action="append", default=[],
                        help="more lm-eval task folders (eval/paper is always included)")
    parser.add_argument("--launcher", help="command that runs `-m llada_xdlm.eval ...` (default: accelerate over "
                                           "all GPUs when there are several, else python)")
    parser.add_argument("--limit", type=float, help="lm-eval --limit: rows per task (a smoke run)")
    parser.add_argument("--compat", choices=COMPATS, default="none",
                        help="the sampler: none (ours, default) or xdlm-authors (the authors' sampler token for "
                             "token, quirks included: docs/evaluation.md); recorded in every cell")
    args = parser.parse_args(argv)

    rows = [parse_row(spec) for spec in args.model] or default_rows(args.mdlm, args.xdlm)
    if len({row.name for row in rows}) != len(rows):
        parser.error("two --model rows share a name; give each its own.")
    from lm_eval.utils import simple_parse_args_string

    model_args = {"compat": args.compat, **(simple_parse_args_string(args.model_args) if args.model_args else {})}
    launcher = shlex.split(args.launcher) if args.launcher else None
    cells = run_grid(rows, args.steps, args.tasks, args.output, model_args,
                     [EVAL_TASKS_DIR, *args.include_path], launcher, args.limit)
    scores, outcomes = scores_of(cells), outcomes_of(cells)
    table = markdown_table(scores, rows, args.steps, args.tasks) + "\nGeneration speed (per lm-eval run):\n\n" + \
        speed_table(cells, rows, args.steps) + "\n" + outcome_table(outcomes, rows, args.steps)
    with open(os.path.join(args.output, "grid.md"), "w", encoding="utf-8") as f:
        f.write(table)
    plot(scores, outcomes, rows, args.steps, args.tasks, os.path.join(args.output, "grid.png"))
    print(table)
    print(f"[paper grid] wrote {os.path.join(args.output, 'grid.md')} and grid.png")
