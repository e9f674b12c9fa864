"""`xdlm pretokenize RECIPE.yaml [--key value ...]` (also `python -m llada_xdlm.training.pretokenize`): tokenise and
pack a recipe's data once into its `pretokenized_dir`; `xdlm-train` with the same recipe then trains from that
folder (memory-mapped Arrow): no tokenisation at start-up, and a resume skips batches by index, instantly.

The folder holds `train/` (and `eval/`) as `datasets.Dataset.save_to_disk`, `tokenizer/`, and `pretokenize.json`
with every setting that shaped the blocks; training refuses the folder when the recipe's settings differ. It is
written under a temporary name and renamed when complete.
"""

import json
import logging
import os
import shutil
import sys
from dataclasses import asdict

from datasets import Dataset, IterableDataset, load_from_disk

from ..cli import UsageError
from .args import DataArguments, ModelArguments, parse_recipe

INFO = "pretokenize.json"
# Settings that do not change the blocks: where they are written, and how the raw data is read.
NOT_SHAPING = {"pretokenized_dir", "streaming"}


def shaping_settings(model_args: ModelArguments, data_args: DataArguments, seed: int) -> dict:
    """Every setting the packed blocks depend on: the data keys, the tokenizer, and the seed (random-length cuts)."""
    data = {k: v for k, v in asdict(data_args).items() if k not in NOT_SHAPING}
    keys = ("tokenizer_name_or_path", "tokenizer_vocab_size", "tokenizer_kwargs")
    tokenizer = {k: getattr(model_args, k) for k in keys}
    return {**data, **tokenizer, "seed": seed}


def materialise(dataset: Dataset | IterableDataset) -> Dataset:
    """A streamed dataset written out as Arrow (row by row, never all in RAM); a map-style one as it is."""
    if isinstance(dataset, Dataset):
        return dataset
    return Dataset.from_generator(rows, gen_kwargs={"dataset": dataset}, features=dataset.features)


def rows(dataset: IterableDataset):
    """The rows of a streamed dataset (module level: `datasets` hashes the generator for its cache)."""
    yield from dataset


def pretokenize(model_args: ModelArguments, data_args: DataArguments, seed: int) -> str:
    """Write the recipe's tokenised blocks and tokenizer to data_args.pretokenized_dir; returns the folder."""
    from .train import load_data

    target = data_args.pretokenized_dir
    if target is None:
        raise UsageError("Set pretokenized_dir in the recipe: the folder to write the tokenised blocks to.")
    if os.path.exists(target):
        raise UsageError(f"pretokenized_dir {target!r} exists: remove it first, or choose another folder.")
    tokenizer, train, evaluation = load_data(model_args, data_args, seed)
    staging = target.rstrip("/") + ".tmp"
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted run left
    for name, blocks in (("train", train), ("eval", evaluation)):
        if blocks is not None:
            materialise(blocks).save_to_disk(os.path.join(staging, name))
    tokenizer.save_pretrained(os.path.join(staging, "tokenizer"))
    with open(os.path.join(staging, INFO), "w") as f:
        json.dump(shaping_settings(model_args, data_args, seed), f, indent=1)
    os.replace(staging, target)
    return target


def load_pretokenized(model_args: ModelArguments, data_args: DataArguments, seed: int):
    """(tokenizer, train, eval or None) from pretokenized_dir, after checking the recipe still shapes the same
    blocks."""
    from transformers import AutoTokenizer

    folder = data_args.pretokenized_dir
    info_path = os.path.join(folder, INFO)
    if not os.path.isfile(info_path):
        raise UsageError(
            f"pretokenized_dir {folder!r} holds no finished pretokenisation ({INFO} is missing): run "
            "`xdlm pretokenize RECIPE.yaml` first."
        )
    with open(info_path) as f:
        written = json.load(f)
    wanted = json.loads(json.dumps(shaping_settings(model_args, data_args, seed)))  # tuples -> lists, as in JSON
    differ = {k: (written.get(k), v) for k, v in wanted.items() if written.get(k) != v}
    if differ:
        listed = ", ".join(f"{k}: folder {old!r}, recipe {new!r}" for k, (old, new) in sorted(differ.items()))
        raise UsageError(
            f"pretokenized_dir {folder!r} was written with other settings ({listed}): run xdlm pretokenize again "
            "into a new folder, or restore the settings."
        )
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
    train = load_from_disk(os.path.join(folder, "train"))
    eval_dir = os.path.join(folder, "eval")
    return tokenizer, train, load_from_disk(eval_dir) if os.path.isdir(eval_dir) else None


def main(argv: list[str] | None = None, prog: str = "xdlm pretokenize") -> None:
    """`xdlm pretokenize RECIPE.yaml [--key value ...]`: pack the recipe's data into its pretokenized_dir."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {prog} RECIPE.yaml [--key value ...]\n\nTokenise and pack the recipe's data once into its "
              f"pretokenized_dir; `xdlm train` with the same recipe then trains from that folder.")
        return
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    model_args, data_args, _, training_args = parse_recipe(argv)
    print(f"wrote {pretokenize(model_args, data_args, training_args.seed)}", flush=True)


if __name__ == "__main__":
    main()
