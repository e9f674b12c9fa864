"""Training: recipe arguments (light), data pipeline, XDLMTrainer and the run behind `xdlm train` (lazy: importing
transformers.Trainer costs seconds, so it happens on first use)."""

import importlib

from .args import DataArguments, DiffusionArguments, ModelArguments, parse_recipe

_LAZY = {"XDLMTrainer": ".trainer", "XDLMCollator": ".data", "main": ".train"}

__all__ = ["DataArguments", "DiffusionArguments", "ModelArguments", "parse_recipe", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
