"""`xdlm`: one command for every job, `xdlm COMMAND --help` for a command's options.

COMMANDS maps each command to the module whose `main(argv, prog)` does the job; a module is imported only when its
command runs. `xdlm-train` and `xdlm-eval` are aliases of `xdlm train` and `xdlm eval`; `python -m llada_xdlm` is
`xdlm`. The options every evaluation command shares, and the next steps a training run prints, are written here.

Bad input caught at the boundary (a recipe value, a data file, a model path) is raised as UsageError and printed as
one line (so is a full disk), `xdlm COMMAND: error: ...`, with exit status 2 as argparse does for a bad option; XDLM_DEBUG=1 shows its
traceback. Any other exception is a bug and keeps its traceback.
"""

import argparse
import errno
import importlib
import json
import os
import shlex
import sys

DEBUG_VARIABLE = "XDLM_DEBUG"  # set to 1 to see the traceback behind a one-line input error

COMMANDS = {
    "train": ("llada_xdlm.launch", "train a YAML recipe (under accelerate on every GPU when it names a launcher)"),
    "pretokenize": ("llada_xdlm.training.pretokenize", "tokenise and pack a recipe's data once into its pretokenized_dir"),
    "sample": ("llada_xdlm.sampling", "generate text after prompts with a trained checkpoint"),
    "eval": ("llada_xdlm.eval", "lm-evaluation-harness with the model xdlm (lm_eval's own options)"),
    "ppl": ("llada_xdlm.evaluation.perplexity", "zero-shot perplexity bound on text corpora"),
    "gen-ppl": ("llada_xdlm.evaluation.gen_ppl", "generative perplexity and entropy of unconditional samples"),
    "fid": ("llada_xdlm.evaluation.fid", "FID of generated images against a reference set"),
    "paper-grid": ("llada_xdlm.evaluation.paper_grid", "the XDLM paper's grid: models x steps x benchmarks"),
    "push": ("llada_xdlm.hub", "stage a checkpoint with remote code and a model card, upload it to the Hub"),
    "reproduce-small": ("llada_xdlm.reproduce", "MDLM vs XDLM vs UDLM at CPU scale, written to docs/small_scale.md"),
    "plot-trajectory": ("llada_xdlm.plotting", "draw what every sampling step filled, refined and re-masked"),
    "prepare-images": ("llada_xdlm.training.images", "write an image corpus as pixel tokens (digits, CIFAR-10)"),
    "check-gpu": ("llada_xdlm.gpu_acceptance", "GPU acceptance: bf16 numerics, fused loss, ZeRO-3, sampling speed"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join([
        "usage: xdlm COMMAND [options]",
        "",
        "Continue-pretrain LLaDA with the XDLM objective, sample in few steps, evaluate, share on the Hub.",
        "",
        "commands:",
        *lines,
        "",
        "`xdlm COMMAND --help` lists a command's options (for train: every recipe key).",
    ])


class UsageError(ValueError):
    """Bad input, named with how to fix it, found by a check at the boundary of a command. `run` prints it as one
    line; a dedicated type (not every ValueError) so that an error raised inside a library or by a bug keeps its
    traceback. A ValueError, so that code calling the library catches it as before."""


def one_line(error: BaseException) -> bool:
    """Whether an error says all a user needs in its message: bad input (UsageError) or a full disk (its message
    names the path; a training run's also says what was kept)."""
    return isinstance(error, UsageError) or (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT))


def run(name: str, argv: list[str], prog: str) -> int:
    """Run one command; its return value becomes the exit status when it is one (check-gpu), else 0. A UsageError
    or a full disk is printed as `prog: error: ...` and gives status 2 (its traceback too when XDLM_DEBUG is set)."""
    module = importlib.import_module(COMMANDS[name][0])
    try:
        result = module.main(argv, prog=prog)
    except (UsageError, OSError) as err:
        if not one_line(err) or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return result if type(result) is int else 0


def main(argv: list[str] | None = None) -> int:
    """The `xdlm` console script: dispatch argv (default sys.argv[1:]) to its command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"xdlm: unknown command {argv[0]!r}; the commands are: {', '.join(COMMANDS)}.\n"
              "`xdlm --help` says what each does.", file=sys.stderr)
        return 2
    return run(argv[0], argv[1:], prog=f"xdlm {argv[0]}")


def train() -> int:
    """The `xdlm-train` console script: `xdlm train`."""
    return run("train", sys.argv[1:], prog="xdlm-train")


def evaluate() -> int:
    """The `xdlm-eval` console script: `xdlm eval`."""
    return run("eval", sys.argv[1:], prog="xdlm-eval")


def add_run_options(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """The options every evaluation command takes: --batch_size, --seed (of its noise), --device (CUDA when there
    is one) and --output (a JSON file for the results)."""
    import torch

    parser.add_argument("--batch_size", type=int, default=batch_size)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default=None, help="write the results as JSON here")


def write_json(path: str | None, results) -> None:
    """Save a command's results where --output says (nothing when it is not given)."""
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2)


def next_steps(output_dir: str, max_sequence_length: int, prompts: list[str] | None = None,
               eval_files: list[str] | None = None, sampling: dict | None = None) -> str:
    """What a finished training run prints: where the model is and three commands to run next (sample, evaluate,
    push), written to work on that model: with the sampler defaults the run saved (`sampling` with a gen_length,
    checked against the model's length before training) the commands need no sampler flags, else the sample fits
    max_sequence_length. With local text validation files the evaluation is the PPL bound on them (offline), else
    GSM8K through lm-eval."""
    from .evaluation.perplexity import LOCAL_SUFFIXES

    model = shlex.quote(output_dir)
    prompt = shlex.quote((prompts or ["The"])[0])
    if sampling and "gen_length" in sampling:
        sample_flags, model_args = "", f"pretrained={output_dir}"
    else:
        gen_length = min(256, max_sequence_length // 2)
        steps = min(32, gen_length)
        sample_flags = f" --steps {steps} --gen_length {gen_length}"
        model_args = f"pretrained={output_dir},steps={steps},gen_length={gen_length}"
    if eval_files and all(f.endswith(LOCAL_SUFFIXES) for f in eval_files):
        evaluate = f"xdlm ppl --model {model} --datasets {' '.join(map(shlex.quote, eval_files))}"
    else:
        evaluate = f"xdlm eval --model xdlm --model_args {shlex.quote(model_args)} --tasks gsm8k"
    name = os.path.basename(os.path.normpath(output_dir))
    return "\n".join([
        f"Saved the model and its tokenizer to {output_dir}. Next:",
        f"  xdlm sample --model {model} --prompt {prompt}{sample_flags}",
        f"  {evaluate}",
        f"  xdlm push --model {model} --repo YOUR_HF_NAME/{name}",
    ])
