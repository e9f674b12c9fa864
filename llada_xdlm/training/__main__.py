"""`python -m llada_xdlm.training RECIPE.yaml` (same as `xdlm-train` and `python -m llada_xdlm.train`)."""

from .train import cli

cli()
