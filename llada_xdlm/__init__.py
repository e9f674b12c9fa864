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

# Training (issue 5): the argument dataclasses are light; XDLMTrainer imports transformers.Trainer (~4 s), so it
# is loaded on first attribute access.
from .training import DataArguments, DiffusionArguments, ModelArguments  # noqa: E402


def __getattr__(name: str):
    if name == "XDLMTrainer":
        from .training.trainer import XDLMTrainer

        return XDLMTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ += ["DataArguments", "DiffusionArguments", "ModelArguments", "XDLMTrainer"]

# Sampling (issue 4).
from .sampling import GenerateOutput, Trajectory, generate, truncate_at_stop  # noqa: E402

__all__ += ["generate", "GenerateOutput", "Trajectory", "truncate_at_stop"]

# Math (issue 3) and the fused LM-head loss (issue 7).
from .diffusion import (  # noqa: E402
    LinearSchedule,
    LogLinearSchedule,
    forward_process,
    get_schedule,
    prior_sample,
    reverse_step_probs,
    sample_t,
    xdlm_loss,
)
from .ops import fused_linear_xdlm_loss  # noqa: E402

__all__ += ["forward_process", "xdlm_loss", "reverse_step_probs", "prior_sample", "LinearSchedule", "LogLinearSchedule",
            "get_schedule", "sample_t", "fused_linear_xdlm_loss"]
