"""`python -m llada_xdlm.train RECIPE.yaml [--key value ...]`: runs a training recipe (see docs/training.md)."""

from llada_xdlm.training.train import cli

if __name__ == "__main__":
    cli()
