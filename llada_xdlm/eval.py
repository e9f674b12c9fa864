"""`xdlm-eval` / `python -m llada_xdlm.eval`: lm-eval's own command line with the model "xdlm" registered.

Same arguments as `lm_eval` (e.g. `xdlm-eval --model xdlm --model_args pretrained=PATH --tasks gsm8k`). Use it
where the start-up hook is not installed: editable installs (`pip install -e .`) do not get the .pth file that
makes the plain `lm_eval --model xdlm` work.
"""

from llada_xdlm_lm_eval_hook import register


def main() -> None:
    register()
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
