"""`python -m llada_xdlm.train RECIPE.yaml [--key value ...]`: `xdlm train`, the form to put after
`accelerate launch` (see llada_xdlm.launch and docs/training.md)."""

from llada_xdlm.launch import main

if __name__ == "__main__":
    main(prog="python -m llada_xdlm.train")
