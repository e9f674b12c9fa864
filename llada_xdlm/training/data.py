"""Text -> training examples: load any `datasets` source, tokenise, append EOS, pack into blocks (pretraining) or
build prompt/response examples (SFT), and collate.

Every example has `input_ids`; SFT examples also carry `labels` with -100 on the prompt (never noised, never
counted). Packing runs batch-wise inside `Dataset.map` / `IterableDataset.map`, so a large corpus is processed
lazily (streaming) or through the on-disk Arrow cache, never materialised in RAM.

Bad data (a missing file, bytes that are not UTF-8, nothing but blank lines, a missing column, the mask token in
the text) is a UsageError raised before training starts: `xdlm train` prints it as one line.
"""

import glob
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset, IterableDataset, load_dataset

from ..cli import UsageError
from .args import DataArguments

BUILDERS = {"json": "json", "jsonl": "json", "txt": "text", "text": "text", "parquet": "parquet", "csv": "csv"}
TEXT_BUILDERS = ("json", "text", "csv")  # their files are read as UTF-8 text
READ_CHUNK = 16 << 20  # bytes of a text file decoded at once (plus the rest of its last line)
MAP_BATCH = 1000  # documents packed together; the remainder (< block_size tokens) of each batch is dropped

logger = logging.getLogger("llada_xdlm.train")


def holds_text(path: str) -> bool:
    """Whether a text data file has a line that is not blank. Every byte is decoded: one that is not UTF-8 is a
    UsageError naming the file and the line (the `datasets` builders would fail on it without saying where)."""
    found, line = False, 1  # `line`: the line the chunk starts on
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK) + f.readline():  # whole lines, so no character is cut in two
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError as error:
                where = line + chunk.count(b"\n", 0, error.start)
                raise UsageError(f"data file {path}, line {where}: byte {chunk[error.start]:#04x} is not UTF-8 text; "
                                 f"save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8).") from None
            found = found or not text.isspace()
            line += chunk.count(b"\n")
    return found


def check_local_files(files: list[str], builder: str) -> None:
    """Before `datasets` reads them: each local file exists (a glob pattern matches some), a text file is UTF-8, and
    not every file is empty or blank. Remote files (hf://, https://) are left to `datasets`."""
    local = [f for f in files if "://" not in f]
    paths = []
    for pattern in local:
        matched = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matched or not all(os.path.isfile(p) for p in matched):
            what = "matches no file" if not matched else "does not exist"
            raise UsageError(f"data file {pattern} {what} (paths are relative to the folder you run in: "
                             f"{os.getcwd()}); fix data_files / eval_data_files in the recipe.")
        paths += matched
    if builder in TEXT_BUILDERS:
        has_text = [holds_text(p) for p in paths]  # every file decoded, so a bad byte anywhere is found now
    else:
        has_text = [os.path.getsize(p) > 0 for p in paths]
    if local == files and not any(has_text):
        raise UsageError(f"The dataset is empty: the data files {files} hold no text (they are empty or only blank "
                         f"lines); point data_files at the corpus.")


def load_raw(data_args: DataArguments, files: list[str] | None, split: str) -> Dataset | IterableDataset:
    """One split of a Hub dataset (`dataset_name`, `dataset_config`) or of local files (builder from the extension)."""
    if files:
        extensions = {f.rsplit(".", 1)[-1].lower() for f in files}
        builders = {BUILDERS.get(e) for e in extensions}
        if None in builders or len(builders) != 1:
            raise UsageError(
                f"data files {files} have extensions {sorted(extensions)}: use one of {sorted(BUILDERS)} per split."
            )
        builder = builders.pop()
        check_local_files(files, builder)
        return load_dataset(builder, data_files=list(files), split="train", streaming=data_args.streaming)
    return load_dataset(data_args.dataset_name, data_args.dataset_config, split=split, streaming=data_args.streaming)


def first_row(dataset: Dataset | IterableDataset, name: str) -> dict:
    """The first row, or a clear error for an empty dataset (checked before any training starts)."""
    for row in dataset.take(1) if isinstance(dataset, IterableDataset) else dataset.select(range(min(1, len(dataset)))):
        return row
    raise UsageError(f"The {name} dataset is empty: check data_files / dataset_name / the split name.")


def load_splits(data_args: DataArguments) -> tuple[Dataset | IterableDataset, Dataset | IterableDataset | None]:
    """(train, eval) raw splits. Eval comes from eval_data_files, eval_split, or the first `eval_rows` train rows."""
    train = load_raw(data_args, data_args.data_files, data_args.train_split)
    evaluation = None
    if data_args.eval_data_files or data_args.eval_split:
        evaluation = load_raw(data_args, data_args.eval_data_files, data_args.eval_split)
    elif data_args.eval_rows > 0:
        if isinstance(train, IterableDataset):
            evaluation, train = train.take(data_args.eval_rows), train.skip(data_args.eval_rows)
        else:
            if len(train) <= data_args.eval_rows:
                raise UsageError(f"eval_rows={data_args.eval_rows} leaves no training rows (the split has {len(train)}).")
            evaluation = train.select(range(data_args.eval_rows))
            train = train.select(range(data_args.eval_rows, len(train)))
    return train, evaluation


def check_columns(row: dict, data_args: DataArguments, name: str) -> None:
    """The columns the mode needs exist (error names what is there and the recipe key to set)."""
    if data_args.mode == "pretrain":
        needed = [data_args.text_column]
        key = "text_column"
    elif data_args.messages_column in row:
        return
    else:
        needed = [data_args.prompt_column, data_args.response_column]
        key = "messages_column, or prompt_column and response_column"
    missing = [c for c in needed if c not in row]
    if missing:
        raise UsageError(
            f"The {name} dataset has no column {missing} (columns: {sorted(row)}): set {key} in the recipe."
        )


def reject_mask_token(ids: list[int], mask_id: int, row: int, text: str) -> None:
    if mask_id in ids:
        raise UsageError(
            f"Row {row} contains the mask token id {mask_id} (text starts {text[:80]!r}): the mask token is reserved "
            "for the noise; remove it from the data."
        )


def pack_fn(tokenizer, block_size: int, text_column: str, mask_id: int, random_length_prob: float, seed: int):
    """Batched map function: tokenise, append EOS, concatenate, cut into block_size blocks. With probability
    `random_length_prob` a block is cut to a length uniform in [1, block_size] (LLaDA's variable-length trick),
    drawn from a generator seeded by (seed, first row index), so the data is the same on every run and resume."""
    eos, block = tokenizer.eos_token_id, block_size

    def pack(batch: dict, indices: list[int]) -> dict:
        texts = batch[text_column]
        stream = []
        for text, row, ids in zip(texts, indices, tokenizer(texts, add_special_tokens=False)["input_ids"]):
            reject_mask_token(ids, mask_id, row, text)
            stream.extend(ids)
            stream.append(eos)
        blocks = [stream[i : i + block] for i in range(0, len(stream) - block + 1, block)]
        if random_length_prob > 0 and blocks:
            rng = np.random.default_rng([seed, indices[0]])
            cut = rng.random(len(blocks)) < random_length_prob
            lengths = rng.integers(1, block + 1, len(blocks))
            blocks = [b[:n] if c else b for b, c, n in zip(blocks, cut, lengths)]
        return {"input_ids": blocks}

    return pack


def check_chat_template(tokenizer) -> None:
    """Refuse a chat template that appends the assistant header whatever add_generation_prompt says (the one
    LLaDA-8B-Instruct and LLaDA-1.5 ship): a finished conversation would end in an empty assistant turn, and SFT
    would train the model to write one after every answer."""
    turn = [{"role": "user", "content": "Hello"}]
    asked = tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
    if asked == tokenizer.apply_chat_template(turn, add_generation_prompt=False, tokenize=False):
        raise ValueError(
            "The tokenizer's chat template appends the assistant header even with add_generation_prompt=False "
            "(LLaDA-8B-Instruct's and LLaDA-1.5's do), so SFT would train on an empty assistant turn after every "
            "response. Give a template that adds it only when asked: in the recipe, tokenizer_kwargs: "
            "{chat_template: ...} (recipes/llada_instruct_sft.yaml sets LLaDA's, "
            "llada_xdlm.tokenization.CHAT_TEMPLATE)."
        )


def sft_fn(tokenizer, data_args: DataArguments, mask_id: int):
    """Map function: one example per row, prompt tokens labelled -100, response + EOS as targets (LLaDA SFT).
    Chat messages (or prompt/response columns, as a user/assistant pair) go through the chat template when the
    tokenizer has one; the last message is the response, everything before it the prompt. A row longer than
    block_size is cut to it and flagged `overlong` (`handle_overlong` counts, reports and maybe drops them)."""
    eos, block = tokenizer.eos_token_id, data_args.block_size
    if tokenizer.chat_template:
        check_chat_template(tokenizer)

    def encode(row: dict, index: int) -> dict:
        if data_args.messages_column in row and row[data_args.messages_column] is not None:
            messages = row[data_args.messages_column]
        else:
            messages = [
                {"role": "user", "content": row[data_args.prompt_column]},
                {"role": "assistant", "content": row[data_args.response_column]},
            ]
        if tokenizer.chat_template:
            prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, return_dict=False)
            full = tokenizer.apply_chat_template(messages, return_dict=False)
            if full[: len(prompt)] != prompt:
                raise UsageError(f"Row {index}: the chat template does not extend the prompt with the response.")
        else:
            prompt = tokenizer("".join(m["content"] for m in messages[:-1]), add_special_tokens=False)["input_ids"]
            full = prompt + tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]
        full = full + [eos]
        reject_mask_token(full, mask_id, index, " ".join(m["content"] for m in messages))
        if len(prompt) >= block:
            raise UsageError(f"Row {index}: the prompt has {len(prompt)} tokens, not less than block_size={block}.")
        overlong = len(full) > block
        full = full[:block]
        return {"input_ids": full, "labels": [-100] * len(prompt) + full[len(prompt) :], "overlong": overlong}

    return encode


def build_dataset(
    raw: Dataset | IterableDataset, tokenizer, data_args: DataArguments, mask_id: int, seed: int, name: str, train: bool
) -> Dataset | IterableDataset:
    """Tokenised examples from a raw split (errors on empty data, missing columns, mask tokens in the text)."""
    row = first_row(raw, name)
    check_columns(row, data_args, name)
    columns = list(row)
    if data_args.mode == "pretrain":
        fn = pack_fn(tokenizer, data_args.block_size, data_args.text_column, mask_id,
                     data_args.random_length_prob if train else 0.0, seed)
        kwargs = dict(batched=True, batch_size=MAP_BATCH)
    else:
        fn, kwargs = sft_fn(tokenizer, data_args, mask_id), {}
    dataset = raw.map(fn, with_indices=True, remove_columns=columns, **kwargs)
    if data_args.mode == "sft":
        dataset = handle_overlong(dataset, data_args, name)
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise UsageError(
            f"The {name} dataset gives no block of block_size={data_args.block_size} tokens: lower block_size "
            "or add data."
        )
    return dataset


def handle_overlong(dataset: Dataset | IterableDataset, data_args: DataArguments, name: str):
    """SFT rows longer than block_size lose the end of their response, end-of-turn and EOS included: count them and
    say so (a map-style split once, up front; a streamed one row by row as they arrive), and with
    `overlong_sft_rows: drop` leave them out instead."""
    block, drop = data_args.block_size, data_args.overlong_sft_rows == "drop"
    action = "left out" if drop else f"cut to block_size={block} (the end of the response and its EOS lost)"
    advice = "raise block_size" + ("" if drop else ", or set overlong_sft_rows: drop to leave such rows out")
    if isinstance(dataset, Dataset):
        n = sum(dataset["overlong"])
        if n:
            logger.warning("%d of %d %s SFT rows are longer than block_size=%d tokens: %s; %s.", n, len(dataset),
                           name, block, action, advice)
        if drop:
            dataset = dataset.filter(lambda row: not row["overlong"])
            if len(dataset) == 0:
                raise UsageError(f"Every {name} SFT row is longer than block_size={block}: raise block_size.")
    else:
        seen = [0]

        def report(row: dict) -> bool:
            if row["overlong"]:
                seen[0] += 1
                logger.warning("%s SFT row longer than block_size=%d tokens (%d so far): %s; %s.", name, block,
                               seen[0], action, advice)
            return not (drop and row["overlong"])

        dataset = dataset.filter(report)
    return dataset.remove_columns("overlong")


def corpus_texts(raw: Dataset | IterableDataset, data_args: DataArguments):
    """The first `tokenizer_train_rows` texts of the train split (to build a fresh tokenizer)."""
    rows = raw.take(data_args.tokenizer_train_rows) if isinstance(raw, IterableDataset) else raw.select(
        range(min(len(raw), data_args.tokenizer_train_rows))
    )
    check_columns(first_row(raw, "train"), data_args, "train")
    for row in rows:
        if data_args.mode == "pretrain":
            yield row[data_args.text_column]
        elif data_args.messages_column in row:
            yield from (m["content"] for m in row[data_args.messages_column])
        else:
            yield row[data_args.prompt_column]
            yield row[data_args.response_column]


@dataclass
class XDLMCollator:
    """Pad a list of examples into one batch. Pretraining (`length` = block_size): every batch is [B, length] with
    `input_ids`, `labels` (-100 on padding) and `attention_mask` (0 on padding; an all-ones mask costs nothing, the
    model drops it), so batches from any source stack and split alike, as the distributed loader of a streamed
    dataset needs (it concatenates the batches of all processes). SFT (`count_padding`): LLaDA pads with EOS tokens,
    to the longest example, that are noised and predicted like the response, so the model learns where to stop; they
    are attended to and counted, and the batch has no attention_mask."""

    pad_token_id: int
    count_padding: bool = False
    length: int | None = None  # pad every batch to this many tokens (None: to its longest example)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(e["input_ids"]) for e in examples)
        if self.length is not None and longest > self.length:
            raise ValueError(f"An example has {longest} tokens, more than the collator's length={self.length} "
                             "(block_size): rebuild the data with this block_size.")
        B, L = len(examples), self.length or longest
        input_ids = torch.full((B, L), self.pad_token_id, dtype=torch.long)
        labels = torch.full((B, L), self.pad_token_id if self.count_padding else -100, dtype=torch.long)
        attention_mask = torch.zeros(B, L, dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            input_ids[i, :n] = torch.as_tensor(e["input_ids"])
            labels[i, :n] = torch.as_tensor(e.get("labels", e["input_ids"]))
            attention_mask[i, :n] = 1
        batch = {"input_ids": input_ids, "labels": labels}  # [B, L] each
        if not self.count_padding:
            batch["attention_mask"] = attention_mask
        return batch
