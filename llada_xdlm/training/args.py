"""Recipe arguments: model, data and diffusion dataclasses plus HF TrainingArguments, read from one YAML file.

`parse_recipe(["recipe.yaml", "--learning_rate", "1e-4"])` loads the YAML (flat keys, as HF example recipes),
uses it as the defaults of an `HfArgumentParser` and lets the remaining command-line flags override it.
"""

import os
from dataclasses import dataclass, field, fields
from typing import Literal

import yaml

# LLaDA's linear layers inside each transformer block. `ff_out` also names the LM head
# (model.transformer.ff_out), so targets are matched by a full-name regex restricted to the blocks.
LLADA_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"]
OBJECTIVES = ("xdlm", "mdlm", "udlm", "ar")
SCHEDULES = ("linear", "loglinear")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class ModelArguments:
    """Which model to train: a checkpoint to continue, or a fresh LLaDA-architecture model from `model_config`."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id or local dir (LLaDA-8B: GSAI-ML/LLaDA-8B-Base). Empty: fresh model."}
    )
    model_config: dict | str | None = field(
        default=None, metadata={"help": "LLaDAConfig keys for a fresh model (d_model, n_layers, ...), YAML/JSON."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Defaults to model_name_or_path. Both empty: build one from the train corpus."}
    )
    tokenizer_vocab_size: int = field(default=4096, metadata={"help": "Vocabulary size of a tokenizer built here."})
    tokenizer_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "Extra from_pretrained kwargs for the tokenizer, YAML/JSON, e.g. {eos_token: '[SEP]'}."},
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"help": "Dtype the weights are loaded in (mixed precision is set by bf16/fp16)."}
    )
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa | eager | flash_attention_2"})
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(LLADA_LORA_TARGETS),
        metadata={"help": "Linear layer names inside the transformer blocks (never the LM head)."},
    )

    def __post_init__(self):
        self.model_name_or_path = self.model_name_or_path or None
        self.tokenizer_name_or_path = self.tokenizer_name_or_path or self.model_name_or_path
        if isinstance(self.model_config, str):
            self.model_config = yaml.safe_load(self.model_config)
        if self.model_config is not None and not isinstance(self.model_config, dict):
            raise TypeError(f"model_config must be a mapping of LLaDAConfig keys, got {self.model_config!r}")
        if isinstance(self.tokenizer_kwargs, str):
            self.tokenizer_kwargs = yaml.safe_load(self.tokenizer_kwargs)
        if self.tokenizer_kwargs is not None and not isinstance(self.tokenizer_kwargs, dict):
            raise TypeError(f"tokenizer_kwargs must be a mapping of from_pretrained kwargs, got {self.tokenizer_kwargs!r}")
        if self.model_name_or_path is None and self.model_config is None:
            raise ValueError("Set model_name_or_path (a checkpoint) or model_config (keys of a fresh LLaDAConfig).")
        if self.model_name_or_path is not None and self.model_config is not None:
            raise ValueError(
                f"model_config is only for a fresh model, but model_name_or_path={self.model_name_or_path!r} is set: "
                "remove one of them."
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not one of {DTYPES}.")
        if self.use_lora and not self.lora_target_modules:
            raise ValueError("use_lora is set but lora_target_modules is empty: name the block layers to adapt.")

    @property
    def lora_target_regex(self) -> str:
        """Full-name regex for peft: the named layers inside `blocks.<i>` only, so the LM head never matches."""
        return r".*\.blocks\.\d+\.(" + "|".join(self.lora_target_modules) + ")"


@dataclass
class DataArguments:
    """Where the text comes from and how it becomes training blocks."""

    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub dataset id (e.g. HuggingFaceFW/fineweb-edu), or json/text/parquet."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config (e.g. sample-10BT)."})
    data_files: list[str] | None = field(
        default=None, metadata={"help": "Local json/jsonl/txt/parquet files (builder inferred from the extension)."}
    )
    eval_data_files: list[str] | None = field(default=None, metadata={"help": "Local validation files."})
    train_split: str = "train"
    eval_split: str | None = field(default=None, metadata={"help": "Validation split of dataset_name."})
    eval_rows: int = field(
        default=0, metadata={"help": "Hold out the first N rows of the train split for validation (0: none)."}
    )
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset (needs max_steps)."})
    text_column: str = "text"
    block_size: int = field(default=4096, metadata={"help": "Tokens per training sequence."})
    random_length_prob: float = field(
        default=0.01, metadata={"help": "LLaDA's trick: share of pretraining blocks cut to a random length."}
    )
    mode: Literal["pretrain", "sft"] = "pretrain"
    prompt_column: str = "prompt"
    response_column: str = "response"
    messages_column: str = field(
        default="messages", metadata={"help": "SFT: chat messages column (used when present, via the chat template)."}
    )
    tokenizer_train_rows: int = field(
        default=20000, metadata={"help": "Rows of the train split used to build a fresh tokenizer."}
    )

    def __post_init__(self):
        if self.dataset_name is None and not self.data_files:
            raise ValueError("No data: set dataset_name (Hub id) or data_files (local json/jsonl/txt/parquet).")
        if self.mode not in ("pretrain", "sft"):
            raise ValueError(f"mode={self.mode!r}: use 'pretrain' or 'sft'.")
        if self.block_size < 2:
            raise ValueError(f"block_size={self.block_size} is too small.")
        if not 0.0 <= self.random_length_prob <= 1.0:
            raise ValueError(f"random_length_prob={self.random_length_prob} must be in [0, 1].")


@dataclass
class DiffusionArguments:
    """The training objective (DESIGN §3) and the end-of-run sample printout."""

    objective: Literal["xdlm", "mdlm", "udlm", "ar"] = field(
        default="xdlm", metadata={"help": "xdlm (mixed noise), mdlm (k1=0), udlm (k1=1), ar (causal next token)."}
    )
    k1: float | None = field(
        default=None, metadata={"help": "XDLM mixing ratio in [0, 1] (default 0.1; fixed by mdlm/udlm)."}
    )
    schedule: Literal["linear", "loglinear"] = "linear"
    eps: float = field(default=1e-3, metadata={"help": "t = (1 - eps) u + eps."})
    antithetic: bool = field(default=False, metadata={"help": "Stratified (antithetic) t across the batch."})
    loss_implementation: Literal["fused", "unfused"] = field(
        default="fused", metadata={"help": "fused: chunked LM head + loss, never holds [B, L, V] logits."}
    )
    eval_seed: int = field(default=1234, metadata={"help": "Noise seed of every evaluation (comparable NELBO)."})
    sample_prompts: list[str] | None = field(
        default=None, metadata={"help": "Prompts to sample from after training (printed)."}
    )
    sample_kwargs: dict | str | None = field(
        default=None, metadata={"help": "Keyword arguments of llada_xdlm.generate (default steps 32, gen_length 64)."}
    )

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r} is unknown: use one of {OBJECTIVES}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r} is unknown: use one of {SCHEDULES}.")
        if self.loss_implementation not in ("fused", "unfused"):
            raise ValueError(f"loss_implementation={self.loss_implementation!r}: use 'fused' or 'unfused'.")
        if self.k1 is not None and not 0.0 <= self.k1 <= 1.0:
            raise ValueError(f"k1={self.k1} is outside [0, 1]: 0 is pure masking (MDLM), 1 pure uniform (UDLM).")
        fixed = {"mdlm": 0.0, "udlm": 1.0}.get(self.objective)
        if fixed is not None:
            if self.k1 is not None and self.k1 != fixed:
                raise ValueError(f"objective={self.objective!r} means k1={fixed}, but k1={self.k1}: use xdlm.")
            self.k1 = fixed
        elif self.k1 is None:
            self.k1 = 0.1
        if isinstance(self.sample_kwargs, str):
            self.sample_kwargs = yaml.safe_load(self.sample_kwargs)
        self.sample_kwargs = {"steps": 32, "gen_length": 64, **(self.sample_kwargs or {})}
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"eps={self.eps} must be in (0, 1).")


def parse_recipe(argv: list[str]):
    """(ModelArguments, DataArguments, DiffusionArguments, TrainingArguments) from `RECIPE.yaml [--key value ...]`."""
    from transformers import HfArgumentParser, TrainingArguments

    if not argv or not argv[0].endswith((".yaml", ".yml")):
        raise ValueError(f"Usage: xdlm-train RECIPE.yaml [--key value ...]; got {argv!r}")
    if not os.path.isfile(argv[0]):
        raise FileNotFoundError(f"Recipe {argv[0]!r} does not exist.")
    with open(argv[0]) as f:
        recipe = yaml.safe_load(f) or {}
    parser = HfArgumentParser((ModelArguments, DataArguments, DiffusionArguments, TrainingArguments))
    known = {f.name for dtype in parser.dataclass_types for f in fields(dtype)}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise ValueError(f"Recipe {argv[0]!r} has unknown keys {unknown}: check their spelling (docs/training.md).")
    # YAML values become the parser's defaults: typed values pass through, strings ("3e-4") are converted by argparse.
    parser.set_defaults(**recipe)
    return parser.parse_args_into_dataclasses(args=argv[1:])
