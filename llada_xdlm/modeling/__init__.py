"""The native LLaDA model: config + modeling, self-contained so both files ship to the Hub as remote code."""

from .configuration_llada import LLaDAConfig
from .modeling_llada import LLaDAModelLM, LLaDAOutput


def register_auto_classes() -> None:
    """Make AutoConfig / AutoModel / AutoModelForCausalLM resolve model_type "llada" to our classes, and make
    save_pretrained write auto_map + copy both .py files so others load the folder with trust_remote_code=True.
    exist_ok=True lets this coexist with other code (e.g. the official remote code) that registered "llada"."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    AutoConfig.register("llada", LLaDAConfig, exist_ok=True)
    AutoModel.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
    AutoModelForCausalLM.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
    LLaDAConfig.register_for_auto_class()
    LLaDAModelLM.register_for_auto_class("AutoModel")  # save_pretrained adds AutoModelForCausalLM as well


__all__ = ["LLaDAConfig", "LLaDAModelLM", "LLaDAOutput", "register_auto_classes"]
