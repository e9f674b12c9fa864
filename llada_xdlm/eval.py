"""`xdlm eval` (also `xdlm-eval`, `python -m llada_xdlm.eval`): lm-eval's own command line with the model "xdlm"
registered.

Same arguments as `lm_eval` (e.g. `xdlm eval --model xdlm --model_args pretrained=PATH --tasks gsm8k`); `--help`
lists those of `lm_eval run`. The plain `lm_eval --model xdlm` works too after an install (a start-up hook
registers the model); `python -m llada_xdlm.eval` is the form to put after `accelerate launch`.
"""

import sys

from llada_xdlm_lm_eval_hook import register


def main(argv: list[str] | None = None, prog: str = "xdlm-eval") -> None:
    """Run lm-eval's command line on `argv` (default sys.argv[1:]); no arguments or -h show `lm_eval run --help`."""
    argv = sys.argv[1:] if argv is None else argv
    if argv in ([], ["-h"], ["--help"]):
        argv = ["run", "--help"]
    register()
    from lm_eval.__main__ import cli_evaluate

    sys.argv = [prog, *argv]  # lm-eval reads its arguments from sys.argv
    cli_evaluate()


if __name__ == "__main__":
    main(prog="python -m llada_xdlm.eval")
