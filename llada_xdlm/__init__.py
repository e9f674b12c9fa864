"""llada-xdlm: continue-pretrain LLaDA with the XDLM mixed-noise objective, sample in few steps, evaluate."""

from .diffusion import (
    LinearSchedule,
    LogLinearSchedule,
    forward_process,
    get_schedule,
    prior_sample,
    reverse_step_probs,
    sample_t,
    xdlm_loss,
)
from .modeling import (DreamConfig, DreamModelLM, LLaDAConfig, LLaDAModelLM, LLaDAMoEConfig, LLaDAMoEModelLM,
                       LLaDAOutput, register_auto_classes)
from .ops import fused_linear_xdlm_loss
from .sampling import GenerateOutput, SamplerConfig, Trajectory, generate, truncate_at_stop
from .tokenization import build_tokenizer
from .training import DataArguments, DiffusionArguments, ModelArguments

register_auto_classes()


def register_lm_eval() -> None:
    """Make lm-eval's Python API know the model "xdlm" (e.g. `lm_eval.simple_evaluate(model="xdlm", ...)` in a
    notebook), keeping its built-in models. The `lm_eval` command line needs no call: a start-up hook does it."""
    from llada_xdlm_lm_eval_hook import register

    register()


def __getattr__(name: str):
    """XDLMTrainer imports transformers.Trainer (~4 s of import time): load it on first access only."""
    if name == "XDLMTrainer":
        from .training.trainer import XDLMTrainer

        return XDLMTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    # model
    "LLaDAConfig", "LLaDAModelLM", "LLaDAMoEConfig", "LLaDAMoEModelLM", "LLaDAOutput", "DreamConfig", "DreamModelLM",
    "build_tokenizer",
    # math
    "forward_process", "xdlm_loss", "reverse_step_probs", "prior_sample", "LinearSchedule", "LogLinearSchedule",
    "get_schedule", "sample_t", "fused_linear_xdlm_loss",
    # sampling
    "generate", "GenerateOutput", "SamplerConfig", "Trajectory", "truncate_at_stop",
    # evaluation
    "register_lm_eval",
    # training
    "XDLMTrainer", "ModelArguments", "DataArguments", "DiffusionArguments",
]
