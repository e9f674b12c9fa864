"""The native backbones: config + modeling per model, self-contained so they ship to the Hub as remote code.

LLaDA-8B (`LLaDAModelLM`) and LLaDA-MoE-7B-A1B (`LLaDAMoEModelLM`) share one forward contract (docs/model.md);
`load_config` / `model_class` pick the classes of a checkpoint from its config.json."""

import json

from .configuration_llada import LLaDAConfig
from .configuration_llada_moe import LLaDAMoEConfig
from .modeling_llada import LLaDAModelLM, LLaDAOutput
from .modeling_llada_moe import LLaDAMoEModelLM

MODEL_CLASSES = {LLaDAConfig: LLaDAModelLM, LLaDAMoEConfig: LLaDAMoEModelLM}
DIFFUSION_MODELS = tuple(MODEL_CLASSES.values())  # the models with the KV-cache / logits_to_keep / is_causal forward


def load_config(path: str) -> LLaDAConfig | LLaDAMoEConfig:
    """The config of a checkpoint (folder or Hub id) as the class of its backbone. LLaDA-MoE's official config.json
    names its model_type "llada", like LLaDA-8B's, so its MoE keys decide; a config saved here says "lladamoe"."""
    from transformers.utils import cached_file

    with open(cached_file(path, "config.json")) as f:
        raw = json.load(f)
    moe = raw.get("model_type") == "lladamoe" or "num_experts" in raw
    return (LLaDAMoEConfig if moe else LLaDAConfig).from_pretrained(path)


def model_class(config) -> type:
    """The model class of a backbone config (load_config's result)."""
    return MODEL_CLASSES[type(config)]


def register_auto_classes() -> None:
    """Make AutoConfig / AutoModel / AutoModelForCausalLM resolve model_type "llada" and "lladamoe" to our classes.
    exist_ok=True lets this coexist with other code (e.g. the official remote code) that registered the names.

    Local saves stay plain (no auto_map, no copied code): a folder with auto_map makes every AutoTokenizer /
    AutoConfig load outside this package stop at transformers' trust_remote_code prompt. The Hub staging
    (llada_xdlm.hub.stage_for_hub) saves remote code for loading without the package."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    for config_class, model in MODEL_CLASSES.items():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model, exist_ok=True)
        AutoModelForCausalLM.register(config_class, model, exist_ok=True)


__all__ = ["LLaDAConfig", "LLaDAModelLM", "LLaDAMoEConfig", "LLaDAMoEModelLM", "LLaDAOutput", "DIFFUSION_MODELS",
           "load_config", "model_class", "register_auto_classes"]
