"""Stage a checkpoint for the Hugging Face Hub: weights + remote code + tokenizer + a model card, then upload.

    xdlm push --model outputs/llada-xdlm --repo you/LLaDA-8B-XDLM
    xdlm push ... --dry_run --out staged/   # stage the folder only (inspect it before uploading)

Everything in the staging folder is uploaded, so it must be new or empty, and apart from the model folder (staging
rewrites config.json): anything else is refused before a file is written.

The model card is written from what the checkpoint records: config.json (objective, k1, schedule), recipe.yaml (base
model or from scratch, data) and trainer_state.json (optimizer steps, tokens seen). Flags fill in only what a
checkpoint does not record (a folder saved by other software); one that contradicts the checkpoint is an error.

The staged folder loads anywhere with `AutoModel.from_pretrained(repo, trust_remote_code=True)`: staging saves the
model as remote code (configuration_llada.py / modeling_llada.py copied, auto_map written). Checkpoints saved
locally (training outputs) carry no remote code, so that loading their tokenizer never asks to trust any.
"""

import argparse
import json
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import AutoModel, AutoTokenizer

from .checkpoint import resolve_model_path
from .modeling import LLaDAConfig, LLaDAModelLM
from .training.args import RECIPE_FILE


OBJECTIVE_WORDS = {
    "mdlm": "MDLM (masking noise, k1 = 0, as LLaDA)",
    "xdlm": "XDLM (masked/uniform mixed noise)",
    "udlm": "UDLM (uniform noise, k1 = 1)",
    "ar": "autoregressive next-token prediction",
}


@dataclass
class CardFacts:
    """How a checkpoint was made, as its files record it (config.json, recipe.yaml, trainer_state.json); None where
    they record nothing. `base_model` "" means trained from scratch."""

    base_model: str | None = None
    objective: str | None = None
    k1: float | None = None
    schedule: str | None = None
    data: str | None = None
    steps: int | None = None
    tokens: int | None = None
    sampling: dict | None = None  # the sampler defaults config.json stores


def recorded_facts(model_path: str | Path) -> CardFacts:
    """Read what the checkpoint folder records. The model's config wins over the recipe for the objective's
    settings (it is what sampling and evaluation read); the recipe tells the base model and the data; trainer_state
    the optimizer steps and tokens seen."""
    folder = Path(model_path)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    recipe = yaml.safe_load((folder / RECIPE_FILE).read_text()) if (folder / RECIPE_FILE).is_file() else {}
    state = json.loads((folder / "trainer_state.json").read_text()) if (folder / "trainer_state.json").is_file() else {}
    facts = CardFacts()
    if recipe:
        facts.base_model = recipe.get("model_name_or_path") or ""
        if recipe.get("dataset_name"):
            facts.data = " ".join(filter(None, [recipe["dataset_name"], recipe.get("dataset_config")]))
        elif recipe.get("data_files"):
            facts.data = ", ".join(Path(f).name for f in recipe["data_files"]) + " (local files)"
        elif recipe.get("pretokenized_dir"):
            facts.data = f"pre-tokenised blocks in {recipe['pretokenized_dir']}"
    for key in ("objective", "k1", "schedule"):
        setattr(facts, key, config[key] if config.get(key) is not None else recipe.get(key))
    if facts.objective in ("mdlm", "udlm") and facts.k1 is None:
        facts.k1 = 0.0 if facts.objective == "mdlm" else 1.0
    facts.sampling = config.get("sampling") or None
    facts.steps = state.get("global_step") or None
    facts.tokens = state.get("num_input_tokens_seen") or None
    return facts


def merge_facts(recorded: CardFacts, flags: CardFacts) -> CardFacts:
    """The recorded facts completed by the command-line flags: a flag may add what the checkpoint does not record,
    never contradict what it does."""
    merged = CardFacts()
    for key in CardFacts.__dataclass_fields__:
        ours, given = getattr(recorded, key), getattr(flags, key)
        if given is not None and ours is not None and given != ours:
            recorded_as = "trained from scratch" if key == "base_model" and ours == "" else repr(ours)
            raise ValueError(
                f"--{FLAG_NAMES[key]} {given!r} contradicts the checkpoint, which records {key} = {recorded_as} "
                f"(config.json / {RECIPE_FILE} / trainer_state.json): drop the flag; the model card states what the "
                f"checkpoint records."
            )
        setattr(merged, key, ours if ours is not None else given)
    return merged


FLAG_NAMES = {"base_model": "base_model", "objective": "objective", "k1": "k1", "schedule": "schedule",
              "data": "dataset", "steps": "train_steps", "tokens": "train_tokens", "sampling": "sampling"}


def model_card(repo_id: str, facts: CardFacts, k1: float) -> str:
    """README.md for the Hub: what the checkpoint is (from `facts`), how to load, sample and evaluate it."""
    unknown = "not recorded"
    if facts.base_model is None:
        origin = f"a LLaDA-architecture diffusion language model (how it was made is {unknown})"
    elif facts.base_model == "":
        origin = "a LLaDA-architecture diffusion language model trained from scratch"
    else:
        origin = f"{facts.base_model} continued-pretrained"
    objective = OBJECTIVE_WORDS.get(facts.objective, unknown) if facts.objective else unknown
    training = unknown
    if facts.steps:
        training = f"{facts.steps} optimizer steps" + (f", {facts.tokens:,} tokens" if facts.tokens else "")
    sampler = ", ".join(f"{k} {v}" for k, v in facts.sampling.items()) if facts.sampling else "the sampler's own"
    header = ["library_name: transformers", "tags: [llada, diffusion-language-model, xdlm, llada-xdlm]"]
    if facts.base_model and is_hub_id(facts.base_model):  # the Hub links the model to it; a local path means nothing
        header.insert(1, f"base_model: {facts.base_model}")
    return f"""---
{chr(10).join(header)}
---

# {repo_id.split("/")[-1]}

{origin} with the llada-xdlm toolkit.

- Objective: {objective}
- Mixing ratio k1 = {k1} (0 = pure masking as LLaDA/MDLM, 1 = pure uniform noise as UDLM); the sampler's default
- Noise schedule: {facts.schedule or unknown}
- Data: {facts.data or unknown}
- Training: {training}
- Sampler defaults (config.json `sampling`, read by `generate` and the lm-eval model): {sampler}

## Load

```python
from transformers import AutoModel, AutoTokenizer
model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True, dtype="bfloat16")
tokenizer = AutoTokenizer.from_pretrained("{repo_id}", trust_remote_code=True)
```

## Sample in 32 steps

The model loads with transformers alone; the few-step sampler `generate` comes from the llada-xdlm toolkit, which is
not on PyPI. Install it from a checkout of its source (torch first):

```bash
pip install torch && pip install -e .
```

```python
from llada_xdlm import generate
ids = tokenizer(["Question: what is 7 * 6?\\nAnswer:"], return_tensors="pt").input_ids
out = generate(model, ids, steps=32, gen_length=128, block_length=128)
print(tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True))
```

## Evaluate

```bash
lm_eval --model xdlm --model_args pretrained={repo_id},steps=32,gen_length=256,block_length=256 --tasks gsm8k
```
"""


def is_hub_id(name: str) -> bool:
    """Whether `name` can only be a Hub repo id (`org/name` or `name`), not a local path."""
    if Path(name).exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def check_staging_folder(model_path: str | Path, out_dir: str | Path) -> None:
    """Refuse a staging folder whose files would end up in the upload or that would overwrite the model's: it must
    be new or empty, and neither be the model folder nor lie inside it or contain it."""
    model, out = Path(model_path).resolve(), Path(out_dir).resolve()
    fix = "give a new or empty folder outside the model folder"
    if out == model:
        raise ValueError(f"the staging folder {out_dir} is the model folder itself: staging rewrites its config.json "
                         f"and uploads everything in it; {fix}.")
    if model in out.parents:
        raise ValueError(f"the staging folder {out_dir} lies inside the model folder {model_path}; {fix}.")
    if out in model.parents:
        raise ValueError(f"the staging folder {out_dir} contains the model folder {model_path}; {fix}.")
    if out.exists() and not out.is_dir():
        raise ValueError(f"the staging folder {out_dir} is a file; {fix}.")
    if out.is_dir() and any(out.iterdir()):
        names = sorted(p.name for p in out.iterdir())
        raise ValueError(f"the staging folder {out_dir} is not empty ({len(names)} entries: "
                         f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}) and everything in it would be "
                         f"uploaded; {fix}.")


@contextmanager
def remote_code():
    """Within the block, save_pretrained of a LLaDA model writes auto_map and copies configuration_llada.py and
    modeling_llada.py (transformers decides this per class); afterwards local saves are plain again."""
    LLaDAConfig.register_for_auto_class()
    LLaDAModelLM.register_for_auto_class("AutoModel")  # save_pretrained adds AutoModelForCausalLM as well
    try:
        yield
    finally:
        LLaDAConfig._auto_class = LLaDAModelLM._auto_class = None


def stage_for_hub(model_path: str, out_dir: str | Path, repo_id: str, flags: CardFacts | None = None) -> Path:
    """Write model (with remote code), tokenizer and a README.md model card into out_dir. The card states what the
    checkpoint records; `flags` may only add to it (a contradiction is an error). out_dir must be new or empty."""
    check_staging_folder(model_path, out_dir)
    facts = merge_facts(recorded_facts(model_path), flags or CardFacts())
    if facts.k1 is not None and not 0.0 <= facts.k1 <= 1.0:
        raise ValueError(f"k1={facts.k1} must lie in [0, 1].")
    out_dir = Path(out_dir)
    model = AutoModel.from_pretrained(model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if facts.k1 is not None:
        model.config.k1 = facts.k1
    with remote_code():
        model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(model_card(repo_id, facts, model.config.k1))
    return out_dir


def upload(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create the repo if needed and upload the staged folder; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return str(api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="Upload LLaDA-XDLM checkpoint"))


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`xdlm push`: stage a checkpoint (model, tokenizer, remote code, model card) and upload it."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="local checkpoint folder (save_pretrained output)")
    parser.add_argument("--repo", required=True, help="Hub repo id, e.g. user/LLaDA-8B-XDLM")
    parser.add_argument("--base_model", default=None, help="only where the checkpoint records none (no recipe.yaml)")
    parser.add_argument("--objective", default=None, choices=list(OBJECTIVE_WORDS), help="only where not recorded")
    parser.add_argument("--k1", type=float, default=None, help="only where config.json records none")
    parser.add_argument("--schedule", default=None, choices=["linear", "loglinear"], help="only where not recorded")
    parser.add_argument("--dataset", default=None, help="only where the checkpoint records no data")
    parser.add_argument("--train_steps", type=int, default=None, help="only where there is no trainer_state.json")
    parser.add_argument("--train_tokens", type=int, default=None, help="only where there is no trainer_state.json")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry_run", action="store_true", help="stage into --out (or a temp dir) and stop")
    parser.add_argument("--out", default=None, help="staging folder, new or empty (default: a temporary directory)")
    args = parser.parse_args(argv)
    args.model = resolve_model_path(args.model)

    flags = CardFacts(args.base_model, args.objective, args.k1, args.schedule, args.dataset, args.train_steps,
                      args.train_tokens)
    if args.out:
        try:
            check_staging_folder(args.model, args.out)
        except ValueError as error:
            parser.error(str(error))
    out = args.out or tempfile.mkdtemp(prefix="llada-xdlm-hub-")
    folder = stage_for_hub(args.model, out, args.repo, flags)
    print(f"staged {sorted(p.name for p in folder.iterdir())} in {folder}")
    if not args.dry_run:
        print(f"uploaded: {upload(folder, args.repo, private=args.private)}")
