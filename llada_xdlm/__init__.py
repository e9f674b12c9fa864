"""llada-xdlm: continue-pretrain LLaDA with the XDLM mixed-noise objective, sample in few steps, evaluate."""

from .modeling import LLaDAConfig, LLaDAModelLM, LLaDAOutput, register_auto_classes
from .tokenization import build_tokenizer

register_auto_classes()

__all__ = [
    "LLaDAConfig",
    "LLaDAModelLM",
    "LLaDAOutput",
    "build_tokenizer",
]
