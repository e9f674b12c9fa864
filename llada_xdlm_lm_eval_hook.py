"""Start-up hook that makes `lm_eval --model xdlm` work after `pip install llada-xdlm`.

lm-eval 0.4.13 has no plug-in hook for models. The wheel therefore installs `llada_xdlm_lm_eval_hook.pth`,
whose single line runs at every interpreter start: a string test on sys.orig_argv (microseconds) that imports
this module only when the command line mentions lm_eval. Here the exact check runs, and when lm_eval is the
program we register a lazy "module:Class" placeholder, so neither torch nor llada_xdlm is imported until lm-eval
asks for the model. This module must stay stdlib-only: it runs before anything else in the process.
"""

import os
import sys

MODEL_NAME = "xdlm"
MODEL_TARGET = "llada_xdlm.evaluation.lm_eval_model:XDLMEvalLM"
_PROGRAMS = {"lm_eval", "lm-eval"}


def is_lm_eval_program(orig_argv: list[str]) -> bool:
    """True for `lm_eval ...`, `lm-eval ...` (console scripts) and `python [options] -m lm_eval ...`."""
    args = iter(orig_argv[1:])  # orig_argv[0] is the interpreter
    for arg in args:
        if arg in ("-X", "-W"):
            next(args, None)  # skip the option's value
        elif arg.startswith("-c"):
            return False  # python -c runs a string
        elif arg.startswith("-m"):
            return (arg[2:] or next(args, "")) in ("lm_eval", "lm_eval.__main__")
        elif not arg.startswith("-"):
            return os.path.splitext(os.path.basename(arg))[0] in _PROGRAMS  # the script being run
    return False


def register() -> None:
    """Register "xdlm" in lm-eval's model registry as a lazy placeholder, keeping the built-in models."""
    import lm_eval.models  # noqa: F401  (fills the registry first: lm-eval only adds its built-ins to an EMPTY one)
    from lm_eval.api.registry import model_registry

    model_registry.register(MODEL_NAME, target=MODEL_TARGET)


def register_if_lm_eval() -> None:
    """Called from the .pth line: register only when lm_eval is the running program."""
    if is_lm_eval_program(sys.orig_argv):
        register()
