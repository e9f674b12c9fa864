"""`xdlm train RECIPE.yaml [--key value ...]`: run a training recipe, on every visible GPU when it names its launcher.

A recipe may name the accelerate config it runs under:

    accelerate_config: recipes/accelerate/deepspeed_zero3.yaml

`xdlm train` then prints and starts `accelerate launch --config_file CONFIG --num_processes N -m llada_xdlm.train
RECIPE ...`, N being the GPUs this machine shows (a CPU config keeps its own count). A process that a launcher
started (LOCAL_RANK or ACCELERATE_MIXED_PRECISION in its environment) trains in place, so the same command written
by hand, `accelerate launch --config_file CONFIG -m llada_xdlm.train RECIPE`, works as well. Without a CUDA GPU a
GPU launcher is refused at once, naming what to run instead. `--accelerate_config PATH` on the command line
replaces the recipe's; `--accelerate_config ''` trains in this one process.

`accelerate_config` is not one of the training arguments (it is not TrainingArguments' `accelerator_config`):
llada_xdlm.training's parser sets it aside and keeps it in the recipe.yaml saved with the model.
"""

import os
import shlex
import sys

from .cli import UsageError
from .training.args import read_yaml

LAUNCHER_KEY = "accelerate_config"
LAUNCHED = ("LOCAL_RANK", "ACCELERATE_MIXED_PRECISION")  # torchrun, deepspeed and accelerate set one in each process
USAGE = "%(prog)s RECIPE.yaml [--key value ...]"


def split_launcher(argv: list[str]) -> tuple[str | None, list[str]]:
    """(the accelerate config named by --accelerate_config or else the recipe, argv without that flag); None for
    none or an empty value."""
    config = read_yaml(argv[0]).get(LAUNCHER_KEY)
    rest = [argv[0]]
    args = iter(argv[1:])
    for arg in args:
        if arg == f"--{LAUNCHER_KEY}":
            config = next(args, None)
            if config is None:
                raise UsageError(f"--{LAUNCHER_KEY} needs a value: an accelerate config file, or '' for none.")
        elif arg.startswith(f"--{LAUNCHER_KEY}="):
            config = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return config or None, rest


def launched() -> bool:
    """True inside a process started by accelerate launch, torchrun or the deepspeed launcher."""
    return any(name in os.environ for name in LAUNCHED)


def launch_command(config: str, argv: list[str], gpus: int) -> list[str]:
    """`accelerate launch ...` running this recipe under `config` on `gpus` GPUs, or a UsageError saying why not."""
    recipe = argv[0]
    if not os.path.isfile(config):
        raise UsageError(f"{recipe} names {LAUNCHER_KEY}: {config}, which does not exist (paths are relative to "
                         f"the folder you run in; the shipped configs are in recipes/accelerate/).")
    accelerate = read_yaml(config)
    if accelerate.get("num_machines", 1) > 1:
        raise UsageError(f"{config} spans {accelerate['num_machines']} machines: start it on each one with its "
                         f"--machine_rank (recipes/accelerate/launch_slurm.sh does this under SLURM).")
    command = ["accelerate", "launch", "--config_file", config]
    if not accelerate.get("use_cpu", False):
        if gpus == 0:
            raise UsageError(
                f"{recipe} trains under {config}, one process per CUDA GPU, and this machine has no CUDA GPU.\n"
                f"Run it on a GPU machine. Here, train the CPU quickstart instead: xdlm train recipes/quickstart.yaml"
                f"\n(or run this recipe in this one process, without its launcher: add --{LAUNCHER_KEY} '')")
        command += ["--num_processes", str(gpus)]
    return [*command, "-m", "llada_xdlm.train", *argv]


def recipe_help(prog: str) -> str:
    """Usage plus every recipe key (the training dataclasses and TrainingArguments) and the launcher key."""
    from transformers import HfArgumentParser, TrainingArguments

    from .training.args import DataArguments, DiffusionArguments, ModelArguments

    parser = HfArgumentParser(
        (ModelArguments, DataArguments, DiffusionArguments, TrainingArguments), prog=prog, usage=USAGE,
        description="Train with a YAML recipe. Every option below is also a recipe key (`learning_rate: 3e-4`); "
                    "flags after the recipe override its values. Recipes and keys: docs/training.md.",
    )
    parser.add_argument_group("launcher").add_argument(
        f"--{LAUNCHER_KEY}", metavar="PATH",
        help="accelerate config to run under, e.g. recipes/accelerate/deepspeed_zero3.yaml (one process per GPU); "
             "'' trains in this process")
    return parser.format_help()


def main(argv: list[str] | None = None, prog: str = "xdlm train") -> dict | None:
    """Train (in place, or re-started under the recipe's launcher); returns the run's final metrics in place."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(recipe_help(prog))
        return None
    try:
        if not argv or not argv[0].endswith((".yaml", ".yml")):
            raise UsageError("give a YAML recipe first, e.g. recipes/quickstart.yaml (`--help` lists every key).")
        if not os.path.isfile(argv[0]):
            raise UsageError(f"recipe {argv[0]} does not exist.")
        config, argv = split_launcher(argv)
        command = None
        if config is not None and not launched():
            import torch

            command = launch_command(config, argv, torch.cuda.device_count())
    except UsageError as err:
        print(f"usage: {USAGE % {'prog': prog}}\n{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if command is not None:
        print(shlex.join(command), flush=True)
        # accelerate's own module, run by this interpreter: the command above without relying on PATH
        os.execv(sys.executable, [sys.executable, "-m", "accelerate.commands.launch", *command[2:]])
    from .training.train import main as train_main

    return train_main(argv)  # training ignores the recipe's accelerate_config (and saves the recipe as written)
