"""A saved diffusion checkpoint (the output_dir of `xdlm train`: weights, config and tokenizer) loaded for sampling
and evaluation, with an error that says what to give when the folder is not one."""

import os

import torch


def load_checkpoint(path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """(LLaDAModelLM in eval mode on `device`, tokenizer) from a local folder or a Hub id."""
    from transformers import AutoTokenizer

    from .modeling import LLaDAModelLM

    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        adapter = os.path.isfile(os.path.join(path, "adapter_config.json"))
        raise ValueError(
            f"{path} holds no model (no config.json)"
            + (": it is a LoRA adapter; evaluate it with `xdlm eval --model xdlm --model_args pretrained=BASE,peft=" + path + " ...`."
               if adapter else ": give the output_dir of a training run, e.g. outputs/quickstart.")
        )
    model = LLaDAModelLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, AutoTokenizer.from_pretrained(path)
