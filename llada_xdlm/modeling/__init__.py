"""The native LLaDA model: config + modeling, self-contained so both files ship to the Hub as remote code."""

from .configuration_llada import LLaDAConfig
from .modeling_llada import LLaDAModelLM, LLaDAOutput


def register_auto_classes() -> None:
    """Make AutoConfig / AutoModel / AutoModelForCausalLM resolve model_type "llada" to our classes. exist_ok=True
    lets this coexist with other code (e.g. the official remote code) that registered "llada".

    Local saves stay plain (no auto_map, no copied code): a folder with auto_map makes every AutoTokenizer /
    AutoConfig load outside this package stop at transformers' trust_remote_code prompt. The Hub staging
    (llada_xdlm.hub.stage_for_hub) saves remote code for loading without the package."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    AutoConfig.register("llada", LLaDAConfig, exist_ok=True)
    AutoModel.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
    AutoModelForCausalLM.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)


__all__ = ["LLaDAConfig", "LLaDAModelLM", "LLaDAOutput", "register_auto_classes"]
