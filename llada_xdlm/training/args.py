"""Recipe arguments: model, data and diffusion dataclasses plus HF TrainingArguments, read from one YAML file.

`parse_recipe(["recipe.yaml", "--learning_rate", "1e-4"])` loads the YAML (flat keys, as HF example recipes),
uses it as the defaults of an `HfArgumentParser` and lets the remaining command-line flags override it.

Every value is checked before anything is built: its type against the dataclass field's annotation (YAML values;
argparse converts command-line ones), its range against `LIMITS`, and the run length; errors name the key and the
recipe file. They are UsageErrors: `xdlm train` prints them as one line.
"""

import itertools
import math
import os
import types
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from ..cli import UsageError

RECIPE_FILE = "recipe.yaml"  # the recipe a run used, saved beside its model and in every checkpoint
LAUNCHER_KEY = "accelerate_config"  # the launcher a recipe names: `xdlm train`'s business, not the run's

# LLaDA's linear layers inside each transformer block. `ff_out` also names the LM head
# (model.transformer.ff_out), so targets are matched by a full-name regex restricted to the blocks.
LLADA_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"]


# ---- value checks, driven by the dataclass annotations --------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """A closed (or, where marked, open) interval a numeric recipe value must lie in."""

    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False
    hint: str = ""

    def __contains__(self, value) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        return f"{'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"


POSITIVE = Limit(0, open_low=True)
NON_NEGATIVE = Limit(0)
AT_LEAST_ONE = Limit(1)
PROBABILITY = Limit(0, 1)
# Ranges the annotations cannot express. (max_steps, which may be -1 for "use num_train_epochs", is checked with
# the run length in `check_run_length`.)
LIMITS = {
    "tokenizer_vocab_size": AT_LEAST_ONE,
    "lora_r": AT_LEAST_ONE,
    "lora_alpha": POSITIVE,
    "lora_dropout": Limit(0, 1, open_high=True),
    "eval_rows": NON_NEGATIVE,
    "block_size": Limit(2),
    "random_length_prob": PROBABILITY,
    "tokenizer_train_rows": AT_LEAST_ONE,
    "k1": Limit(0, 1, hint="0 is pure masking (MDLM), 1 pure uniform (UDLM)"),
    "eps": Limit(0, 1, open_low=True, open_high=True),
    "learning_rate": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "max_grad_norm": NON_NEGATIVE,
    "adam_beta1": Limit(0, 1, open_high=True),
    "adam_beta2": Limit(0, 1, open_high=True),
    "adam_epsilon": POSITIVE,
    "per_device_train_batch_size": AT_LEAST_ONE,
    "per_device_eval_batch_size": AT_LEAST_ONE,
    "gradient_accumulation_steps": AT_LEAST_ONE,
    "num_train_epochs": NON_NEGATIVE,
    "warmup_steps": NON_NEGATIVE,
    "logging_steps": POSITIVE,
    "save_steps": POSITIVE,
    "eval_steps": POSITIVE,
    "dataloader_num_workers": NON_NEGATIVE,
    "max_nonfinite_steps": NON_NEGATIVE,
}


def matches(value, annotation) -> bool:
    """Whether a YAML value fits a field annotation. Booleans are not numbers; a string is a number only if float()
    reads it (YAML 1.1 reads `3e-4` as a string); annotations this check does not know are left to the dataclass."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin is list or annotation is list:
        return isinstance(value, list) and (not args or all(matches(v, args[0]) for v in value))
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                return False
            return True
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return isinstance(value, annotation) or value in {m.value for m in annotation}
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


PLURALS = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}


def describe(annotation) -> str:
    """The annotation in words, for error messages."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list or annotation is list:
        return f"a list of {PLURALS[args[0]]}" if args and args[0] in PLURALS else "a list"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(repr(m.value) for m in annotation)
    names = {type(None): "null", bool: "true/false", int: "an integer", float: "a number", str: "a string",
             dict: "a mapping"}
    return names.get(origin or annotation, getattr(annotation, "__name__", str(annotation)))


def check_type(key: str, value, annotation) -> None:
    if not matches(value, annotation):
        hint = ""
        if isinstance(value, bool) and matches("", annotation):
            hint = " (YAML reads unquoted yes/no/on/off as booleans: quote the word)"
        raise ValueError(f"{key}={value!r} ({type(value).__name__}) is not {describe(annotation)}{hint}.")


def check_limit(key: str, value) -> None:
    limit = LIMITS.get(key)
    if limit is not None and value is not None and value not in limit:
        where = f"must be {limit}" if limit.high == math.inf else f"is outside {limit}"
        raise ValueError(f"{key}={value!r} {where}" + (f": {limit.hint}." if limit.hint else "."))


def check_fields(obj) -> None:
    """Type and range of every field of a dataclass instance (run first in the __post_init__ of each group)."""
    hints = get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        check_type(f.name, value, hints[f.name])
        check_limit(f.name, value)


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
        check_fields(self)
        self.model_name_or_path = self.model_name_or_path or None
        self.tokenizer_name_or_path = self.tokenizer_name_or_path or self.model_name_or_path
        if isinstance(self.model_config, str):
            self.model_config = yaml.safe_load(self.model_config)
        if self.model_config is not None and not isinstance(self.model_config, dict):
            raise ValueError(f"model_config must be a mapping of LLaDAConfig keys, got {self.model_config!r}")
        if isinstance(self.tokenizer_kwargs, str):
            self.tokenizer_kwargs = yaml.safe_load(self.tokenizer_kwargs)
        if self.tokenizer_kwargs is not None and not isinstance(self.tokenizer_kwargs, dict):
            raise ValueError(f"tokenizer_kwargs must be a mapping of from_pretrained kwargs, got {self.tokenizer_kwargs!r}")
        if self.model_name_or_path is None and self.model_config is None:
            raise ValueError("Set model_name_or_path (a checkpoint) or model_config (keys of a fresh LLaDAConfig).")
        if self.model_name_or_path is not None and self.model_config is not None:
            raise ValueError(
                f"model_config is only for a fresh model, but model_name_or_path={self.model_name_or_path!r} is set: "
                "remove one of them."
            )
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
    overlong_sft_rows: Literal["truncate", "drop"] = field(
        default="truncate",
        metadata={"help": "SFT rows longer than block_size: cut to it or left out; either way counted and logged."},
    )
    prompt_column: str = "prompt"
    response_column: str = "response"
    messages_column: str = field(
        default="messages", metadata={"help": "SFT: chat messages column (used when present, via the chat template)."}
    )
    tokenizer_train_rows: int = field(
        default=20000, metadata={"help": "Rows of the train split used to build a fresh tokenizer."}
    )
    pretokenized_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of packed blocks + tokenizer written once by xdlm pretokenize; training reads it."},
    )

    def __post_init__(self):
        check_fields(self)
        if self.dataset_name is None and not self.data_files and self.pretokenized_dir is None:
            raise ValueError(
                "No data: set dataset_name (Hub id), data_files (local json/jsonl/txt/parquet) or pretokenized_dir."
            )


@dataclass
class DiffusionArguments:
    """The training objective (docs/training.md, "The objective"), saved in the model's config, and the sampler
    defaults saved with it (also used for the end-of-run sample printout)."""

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
    sampling: dict | str | None = field(
        default=None,
        metadata={"help": "The model's sampler defaults, SamplerConfig fields, e.g. {steps: 32, gen_length: 64}; "
                          "saved in config.json (default: those of the model trained from, else SamplerConfig's)."},
    )

    def __post_init__(self):
        check_fields(self)
        fixed = {"mdlm": 0.0, "udlm": 1.0}.get(self.objective)
        if fixed is not None:
            if self.k1 is not None and self.k1 != fixed:
                raise ValueError(f"objective={self.objective!r} means k1={fixed}, but k1={self.k1}: use xdlm.")
            self.k1 = fixed
        elif self.k1 is None:
            self.k1 = 0.1
        if isinstance(self.sampling, str):
            self.sampling = yaml.safe_load(self.sampling)
        if self.sampling is not None:
            from ..sampling import SamplerConfig

            if not isinstance(self.sampling, dict):
                raise ValueError(f"sampling={self.sampling!r} must be a mapping of SamplerConfig fields, e.g. "
                                 f"{{steps: 32, gen_length: 64}}.")
            try:
                SamplerConfig.from_kwargs(**self.sampling)
            except (TypeError, ValueError) as err:
                raise ValueError(f"sampling: {err}") from err
            if self.objective == "ar":
                raise ValueError("sampling sets the diffusion sampler's defaults, but objective='ar' trains a causal "
                                 "model: remove sampling.")


# transformers types resume_from_checkpoint as a path; a recipe may also say true (the newest complete checkpoint).
RECIPE_TYPES = {"resume_from_checkpoint": bool | str | None}


def check_run_length(max_steps: int, num_train_epochs: float, streaming: bool) -> None:
    """max_steps >= 1, or -1 (the default) to train num_train_epochs > 0 epochs of a dataset with a length."""
    if max_steps == 0 or max_steps < -1:
        raise ValueError(
            f"max_steps={max_steps}: set max_steps >= 1 (optimizer steps), or -1 (the default) to train "
            "num_train_epochs epochs."
        )
    if max_steps == -1 and streaming:
        raise ValueError("streaming datasets have no length: set max_steps >= 1.")
    if max_steps == -1 and num_train_epochs <= 0:
        raise ValueError(f"num_train_epochs={num_train_epochs} with max_steps unset trains nothing: set either.")


# Keys a resumed run may change: where and how often it logs, saves and evaluates, how it samples, how the same loss
# is computed, and how long it runs (the learning-rate schedule then follows the new max_steps from the resume on).
# Every other key changes what is trained, or (learning_rate, weight_decay, the Adam settings) is restored from the
# checkpoint's optimizer state and a new value would be silently ignored: a resume refuses a change to it.
RESUME_MAY_CHANGE = frozenset({
    "max_steps",
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "report_to", "run_name", "disable_tqdm",
    "log_level", "logging_dir", "logging_strategy", "logging_steps", "logging_first_step",
    "save_strategy", "save_steps", "save_total_limit",
    "eval_strategy", "eval_steps", "eval_on_start", "per_device_eval_batch_size", "eval_data_files", "eval_split",
    "eval_seed", "sample_prompts", "sampling", "loss_implementation", "attn_implementation", "max_nonfinite_steps",
})


def read_yaml(path: str) -> dict:
    """The `key: value` mapping a YAML file (a recipe, an accelerate config) holds; {} when it is empty. Invalid YAML,
    or a list or a single value at the top, is a UsageError naming the file."""
    try:
        with open(path, "rb") as f:  # bytes: the YAML reader names an undecodable byte and where it is
            content = yaml.safe_load(f)
    except yaml.YAMLError as error:
        raise UsageError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from error
    if content is None:
        return {}
    if not isinstance(content, dict):
        held = "a list" if isinstance(content, list) else f"the single value {content!r}"
        raise UsageError(f"{path} holds {held}, not `key: value` lines: write it as a YAML mapping, one key per "
                         f"line, e.g. `learning_rate: 3.0e-4`.")
    return content



def parse_recipe(argv: list[str]):
    """(ModelArguments, DataArguments, DiffusionArguments, XDLMTrainingArguments) from `RECIPE.yaml [--key value
    ...]`. Raises UsageError naming the key and the recipe for a value of the wrong type or out of range."""
    return read_recipe(argv)[0]


def read_recipe(argv: list[str]) -> tuple[tuple, dict]:
    """(the four argument groups, the recipe as run); every value checked. The recipe as run is the YAML's keys (its
    launcher included) with the command-line overrides applied; training saves it as RECIPE_FILE beside the model and
    in every checkpoint, so `xdlm train <folder>/recipe.yaml` repeats the run and the model card can say how the
    model was made."""
    if not argv or not argv[0].endswith((".yaml", ".yml")):
        raise UsageError(f"Usage: xdlm-train RECIPE.yaml [--key value ...]; got {argv!r}")
    if not os.path.isfile(argv[0]):
        raise UsageError(f"Recipe {argv[0]!r} does not exist.")
    recipe = read_yaml(argv[0])
    as_run = dict(recipe)
    # The launcher a recipe names is `xdlm train`'s business (llada_xdlm.launch); the training run itself ignores it,
    # so the same recipe also works after `accelerate launch -m llada_xdlm.train`.
    launcher = recipe.pop(LAUNCHER_KEY, None)
    if launcher is not None and not isinstance(launcher, str):
        raise UsageError(f"Recipe {argv[0]!r}: accelerate_config={launcher!r} must be the path of an accelerate "
                         f"config file, e.g. recipes/accelerate/deepspeed_zero3.yaml.")
    parser = recipe_parser()
    groups = parser.dataclass_types
    hints = {f.name: get_type_hints(g)[f.name] for g in groups for f in fields(g) if f.init} | RECIPE_TYPES
    unknown = sorted(set(recipe) - set(hints))
    if unknown:
        raise UsageError(f"Recipe {argv[0]!r} has unknown keys {unknown}: check their spelling (docs/training.md).")
    try:
        for key, value in recipe.items():  # before argparse, which would pass typed values through unchecked
            check_type(key, value, hints[key])
        # YAML values become the parser's defaults; strings ("3e-4") and command-line values are converted by it.
        parser.set_defaults(**recipe)
        namespace, unknown = parser.parse_known_args(argv[1:])
        if unknown:
            raise ValueError(f"unknown options {' '.join(unknown)}: check their spelling (`xdlm train --help` lists "
                             f"every key).")
        values = vars(namespace)
        resume = values["resume_from_checkpoint"]
        if isinstance(resume, str) and resume.lower() in ("true", "false"):
            values["resume_from_checkpoint"] = resume.lower() == "true"  # `--resume_from_checkpoint true`
        for key, value in values.items():
            check_limit(key, value)
        check_run_length(values["max_steps"], values["num_train_epochs"], values["streaming"])
        without_flags = vars(parser.parse_args([]))
        for key, value in values.items():
            if value != without_flags[key] and key != "resume_from_checkpoint":  # resuming is not part of the recipe
                as_run[key] = value.value if isinstance(value, Enum) else value
        return tuple(g(**{f.name: values[f.name] for f in fields(g) if f.init}) for g in groups), as_run
    except ValueError as error:  # ours, argparse's and TrainingArguments' checks of a value (e.g. bf16 without a GPU)
        raise UsageError(f"Recipe {argv[0]!r}: {error}") from error


def recipe_parser():
    """An HfArgumentParser over the four argument groups (a recipe's values become its defaults) whose errors (a
    malformed or ambiguous flag) raise ValueError instead of printing its usage screen, hundreds of lines long, and
    exiting."""
    from transformers import HfArgumentParser

    from .training_args import XDLMTrainingArguments

    class RecipeParser(HfArgumentParser):
        def error(self, message):
            raise ValueError(message)

    return RecipeParser((ModelArguments, DataArguments, DiffusionArguments, XDLMTrainingArguments))


def resolved_recipe(recipe: dict) -> dict:
    """Every key of a recipe as run, defaults filled in and each value in one form (numbers as numbers, YAML text of a
    mapping as the mapping, k1 as the objective fixes it, enums as their values): two recipes that train the same way
    resolve to the same values."""
    parser = recipe_parser()
    parser.set_defaults(**{k: v for k, v in recipe.items() if k != LAUNCHER_KEY})
    values = vars(parser.parse_args([]))  # string defaults go through each key's type, as command-line values do
    for group in (ModelArguments, DataArguments, DiffusionArguments):  # cheap; their __post_init__ normalises
        instance = group(**{f.name: values[f.name] for f in fields(group) if f.init})
        values.update((f.name, getattr(instance, f.name)) for f in fields(group))
    values[LAUNCHER_KEY] = recipe.get(LAUNCHER_KEY)
    return {key: value.value if isinstance(value, Enum) else value for key, value in values.items()}


def recipe_changes(trained: dict, new: dict) -> dict[str, tuple]:
    """{key: (value trained with, new value)} for every key the two recipes set differently."""
    old, now = resolved_recipe(trained), resolved_recipe(new)
    return {key: (old.get(key), now.get(key)) for key in sorted(old.keys() | now.keys()) if old.get(key) != now.get(key)}


def write_recipe_file(path: str, recipe: dict, notes: list[str] = ()) -> None:
    """RECIPE_FILE: `notes` as YAML comment lines (how a resumed run's recipe changed), then the recipe."""
    with open(path, "w") as f:
        f.writelines(f"# {note}\n" for note in notes)
        yaml.safe_dump(recipe, f, sort_keys=False)


def read_recipe_file(path: str) -> tuple[dict, list[str]]:
    """(recipe, notes) as `write_recipe_file` wrote them."""
    with open(path) as f:
        text = f.read()
    notes = list(itertools.takewhile(lambda line: line.startswith("# "), text.splitlines()))
    notes = [line[2:] for line in notes]
    return yaml.safe_load(text) or {}, notes
