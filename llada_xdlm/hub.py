"""Stage a checkpoint for the Hugging Face Hub: weights + remote code + tokenizer + a model card, then upload.

    xdlm push --model outputs/llada-xdlm --repo you/LLaDA-8B-XDLM --k1 0.1 --train_steps 600
    xdlm push ... --dry_run --out staged/   # stage the folder only (inspect it before uploading)

The staged folder loads anywhere with `AutoModel.from_pretrained(repo, trust_remote_code=True)`: staging saves the
model as remote code (configuration_llada.py / modeling_llada.py copied, auto_map written). Checkpoints saved
locally (training outputs) carry no remote code, so that loading their tokenizer never asks to trust any.
"""

import argparse
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoModel, AutoTokenizer

from .modeling import LLaDAConfig, LLaDAModelLM


@dataclass
class CardInfo:
    """What the model card states about how the checkpoint was made."""

    repo_id: str
    base_model: str = "GSAI-ML/LLaDA-8B-Base"
    objective: str = "xdlm"
    k1: float | None = None  # defaults to config.k1
    dataset: str = "HuggingFaceFW/fineweb-edu (sample-10BT)"
    train_steps: int | None = None


def model_card(info: CardInfo, k1: float) -> str:
    steps = f"{info.train_steps} optimizer steps" if info.train_steps else "see the training recipe"
    return f"""---
library_name: transformers
base_model: {info.base_model}
tags: [llada, diffusion-language-model, xdlm, llada-xdlm]
---

# {info.repo_id.split("/")[-1]}

A masked/uniform mixed-noise diffusion language model: {info.base_model} continued-pretrained with the
**{info.objective.upper()}** objective (mixing ratio k1 = {k1}; k1 = 0 is pure masking as in LLaDA/MDLM,
k1 = 1 pure uniform noise as in UDLM) with the llada-xdlm toolkit.

- Data: {info.dataset}
- Training: {steps}
- Sampling default stored in the config: `k1 = {k1}` (used by `llada_xdlm.generate` for XDLM refinement)

## Load

```python
from transformers import AutoModel, AutoTokenizer
model = AutoModel.from_pretrained("{info.repo_id}", trust_remote_code=True, dtype="bfloat16")
tokenizer = AutoTokenizer.from_pretrained("{info.repo_id}", trust_remote_code=True)
```

## Sample in 32 steps

```python
from llada_xdlm import generate
ids = tokenizer(["Question: what is 7 * 6?\\nAnswer:"], return_tensors="pt").input_ids
out = generate(model, ids, steps=32, gen_length=128, block_length=128)
print(tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True))
```

## Evaluate

```bash
lm_eval --model xdlm --model_args pretrained={info.repo_id},steps=32,gen_length=256,block_length=256 --tasks gsm8k
```
"""


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


def stage_for_hub(model_path: str, out_dir: str | Path, info: CardInfo) -> Path:
    """Write model (with remote code), tokenizer and README.md model card into out_dir."""
    out_dir = Path(out_dir)
    model = AutoModel.from_pretrained(model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    k1 = model.config.k1 if info.k1 is None else info.k1
    if not 0.0 <= k1 <= 1.0:
        raise ValueError(f"k1={k1} must lie in [0, 1].")
    model.config.k1 = k1
    with remote_code():
        model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(model_card(info, k1))
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
    parser.add_argument("--base_model", default=CardInfo.base_model)
    parser.add_argument("--objective", default="xdlm", choices=["xdlm", "mdlm", "udlm", "ar"])
    parser.add_argument("--k1", type=float, default=None, help="mixing ratio to record (default: config.k1)")
    parser.add_argument("--dataset", default=CardInfo.dataset)
    parser.add_argument("--train_steps", type=int, default=None)
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry_run", action="store_true", help="stage into --out (or a temp dir) and stop")
    parser.add_argument("--out", default=None, help="staging folder (default: a temporary directory)")
    args = parser.parse_args(argv)

    info = CardInfo(args.repo, args.base_model, args.objective, args.k1, args.dataset, args.train_steps)
    out = args.out or tempfile.mkdtemp(prefix="llada-xdlm-hub-")
    folder = stage_for_hub(args.model, out, info)
    print(f"staged {sorted(p.name for p in folder.iterdir())} in {folder}")
    if not args.dry_run:
        print(f"uploaded: {upload(folder, args.repo, private=args.private)}")
