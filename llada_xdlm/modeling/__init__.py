"""The native models (backbones): config + modeling per architecture, self-contained so they ship to the Hub as remote
code, and the table that picks one by the checkpoint's model_type. The trainer, the sampler, the likelihood and the
evaluator take any backbone of BACKBONES: all follow LLaDAModelLM's forward contract (docs/model.md, "What a
backbone provides")."""

from transformers import PreTrainedConfig, PreTrainedModel

from ..cli import UsageError

from .configuration_dream import DreamConfig
from .configuration_llada import LLaDAConfig
from .configuration_llada_moe import LLaDAMoEConfig
from .modeling_dream import DreamModelLM
from .modeling_llada import LLaDAModelLM, LLaDAOutput
from .modeling_llada_moe import LLaDAMoEModelLM

# config.json's model_type -> (config class, model class)
BACKBONES: dict[str, tuple[type[PreTrainedConfig], type[PreTrainedModel]]] = {
    "llada": (LLaDAConfig, LLaDAModelLM),
    "lladamoe": (LLaDAMoEConfig, LLaDAMoEModelLM),
    "Dream": (DreamConfig, DreamModelLM),
}


def backbone_type(config_dict: dict) -> str | None:
    """The BACKBONES key of a config.json. LLaDA-MoE's official config names its model_type "llada", like
    LLaDA-8B's, so its expert keys decide; a config saved here says "lladamoe"."""
    model_type = config_dict.get("model_type")
    return "lladamoe" if model_type == "llada" and "num_experts" in config_dict else model_type


def backbone_classes(path: str) -> tuple[type[PreTrainedConfig], type[PreTrainedModel]]:
    """(config class, model class) for the checkpoint at `path` (a folder or a Hub id), from its model_type."""
    model_type = backbone_type(PreTrainedConfig.get_config_dict(path)[0])
    if model_type not in BACKBONES:
        raise UsageError(f"{path} holds a model_type={model_type!r} model; supported backbones are "
                         f"{', '.join(BACKBONES)} (docs/model.md says what a new backbone must provide).")
    return BACKBONES[model_type]


def load_config(path: str) -> PreTrainedConfig:
    """The config of the checkpoint at `path`, as its backbone's config class."""
    return backbone_classes(path)[0].from_pretrained(path)


def model_class(config: PreTrainedConfig) -> type[PreTrainedModel]:
    """The model class of a backbone config (load_config's result)."""
    return next(model for config_class, model in BACKBONES.values() if type(config) is config_class)


def load_backbone(path: str, **kwargs) -> PreTrainedModel:
    """The native model of the checkpoint at `path`; kwargs go to from_pretrained (dtype=, config=, ...)."""
    return backbone_classes(path)[1].from_pretrained(path, **kwargs)


def is_backbone(model) -> bool:
    """Whether `model` follows the backbone contract (a forward with logits_to_keep, spans and a KV cache)."""
    return isinstance(model, tuple(model_class for _, model_class in BACKBONES.values()))


def register_auto_classes() -> None:
    """Make AutoConfig / AutoModel / AutoModelForCausalLM resolve every backbone's model_type to our classes.
    exist_ok=True lets this coexist with other code (e.g. the official remote code) that registered the type.

    Local saves stay plain (no auto_map, no copied code): a folder with auto_map makes every AutoTokenizer /
    AutoConfig load outside this package stop at transformers' trust_remote_code prompt. The Hub staging
    (llada_xdlm.hub.stage_for_hub) saves remote code for loading without the package."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    for model_type, (config_class, model_class) in BACKBONES.items():
        AutoConfig.register(model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        AutoModelForCausalLM.register(config_class, model_class, exist_ok=True)


__all__ = ["BACKBONES", "DreamConfig", "DreamModelLM", "LLaDAConfig", "LLaDAModelLM", "LLaDAMoEConfig",
           "LLaDAMoEModelLM", "LLaDAOutput", "backbone_classes", "backbone_type", "is_backbone", "load_backbone",
           "load_config", "model_class", "register_auto_classes"]
