"""`python -m llada_xdlm.train RECIPE.yaml [--key value ...]`: `xdlm train`, the form to put after
`accelerate launch` (see llada_xdlm.launch and docs/training.md)."""

import sys

from llada_xdlm.cli import run

if __name__ == "__main__":
    sys.exit(run("train", sys.argv[1:], prog="python -m llada_xdlm.train"))
