"""A saved diffusion checkpoint (the output_dir of `xdlm train`: weights, config and tokenizer) loaded for sampling
and evaluation, with an error that says what to give when the folder is not one; the check every command runs on a
model path before loading it; and the training settings its config records (objective, k1, schedule), which sampling
and evaluation take as their defaults."""

import functools
import logging
import os

import torch

from .cli import UsageError

logger = logging.getLogger(__name__)

# What a config without the training keys means (LLaDA-8B-Base's, Dream-7B's, or a model not built here).
UNRECORDED = {"k1": 0.0, "schedule": "linear"}


def looks_local(path: str) -> bool:
    """Whether a model path means a folder on this machine rather than a Hub id (`org/name`): it is absolute, starts
    with ./ ../ or ~, has more than one '/', or its first component is a local folder (outputs/nope)."""
    return (os.path.isabs(path) or path.startswith(("./", "../", "~")) or path in (".", "..")
            or path.count("/") > 1 or os.path.isdir(path.split("/")[0]))


def resolve_model_path(path: str) -> str:
    """`path` for from_pretrained, ~ expanded; a path that looks local (looks_local) and is no folder here is a
    UsageError at once, where from_pretrained would spend a minute on Hub retries and then blame the connection."""
    if looks_local(path) and not os.path.isdir(os.path.expanduser(path)):
        found = "a file, not a model folder" if os.path.exists(os.path.expanduser(path)) else "no such folder"
        raise UsageError(f"no model at {path} ({found}): give a training run's output_dir (e.g. outputs/quickstart) "
                         f"or a Hub id such as GSAI-ML/LLaDA-8B-Base.")
    return os.path.expanduser(path)


def load_checkpoint(path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """(the checkpoint's backbone in eval mode on `device`, tokenizer) from a local folder or a Hub id."""
    from transformers import AutoTokenizer

    from .modeling import load_backbone

    path = resolve_model_path(path)
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        adapter = os.path.isfile(os.path.join(path, "adapter_config.json"))
        raise UsageError(
            f"{path} holds no model (no config.json)"
            + (": it is a LoRA adapter; evaluate it with `xdlm eval --model xdlm --model_args pretrained=BASE,peft=" + path + " ...`."
               if adapter else ": give the output_dir of a training run, e.g. outputs/quickstart.")
        )
    model = load_backbone(path, dtype=dtype).to(device).eval()
    return model, AutoTokenizer.from_pretrained(path)


def trained_setting(model_config, name: str):
    """The value of a training setting ("objective", "k1" or "schedule") the model config records. An objective
    not recorded (LLaDA-8B-Base, a model built here) follows from k1: "mdlm" at 0, "udlm" at 1, "xdlm" between."""
    if name == "objective":
        recorded = getattr(model_config, "objective", None)
        k1 = trained_setting(model_config, "k1")
        return recorded if recorded is not None else {0.0: "mdlm", 1.0: "udlm"}.get(k1, "xdlm")
    return getattr(model_config, name, UNRECORDED[name])


def require_diffusion(model_config, job: str) -> None:
    """Refuse a checkpoint trained autoregressively for a job that needs a diffusion model (`job` names it)."""
    if trained_setting(model_config, "objective") == "ar":
        raise ValueError(f"this checkpoint was trained with objective 'ar' (its config.json): it predicts the next "
                         f"token left to right and cannot be used for {job}, which needs a diffusion model. Use it "
                         f"as the evaluator of `xdlm gen-ppl --evaluator`, or train with objective xdlm, mdlm or udlm.")


def resolve_setting(model_config, name: str, given):
    """`given` when it is not None, else what the checkpoint records; a given value that differs from the recorded
    one is allowed (e.g. sampling LLaDA-8B-Base with k1 0.1) and logged once."""
    trained = trained_setting(model_config, name)
    if given is None:
        return trained
    if given != trained:
        _log_once(f"{name}={given!r} differs from the {name}={trained!r} this checkpoint was trained with "
                  f"(config.json); using {given!r} as asked.")
    return given


@functools.cache
def _log_once(message: str) -> None:
    logger.warning(message)
