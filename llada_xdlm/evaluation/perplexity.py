"""Zero-shot perplexity bound of a diffusion LM: exp(NELBO per token) on validation text, the number the XDLM
paper compares across MDLM / XDLM / UDLM. Every PPL here is an upper bound on the true perplexity.

    xdlm ppl --model outputs/lm1b_small --datasets wikitext2 ptb lambada ag_news pubmed arxiv lm1b \
        --block_size 128 --mc_num 16 --seed 0
    xdlm ppl --model outputs/quickstart --datasets data/stdlib_docs/validation.jsonl

Each corpus is tokenised by the model's tokenizer and packed as the model saw its training data (the training
packer, llada_xdlm.training.data: every document followed by EOS, concatenated, cut into blocks of `block_size`
tokens, the remainder dropped). Each block gets `mc_num` diffusion times t (stratified) and one forward each; the
per-token integrand is llada_xdlm.diffusion.xdlm_loss at the k1 the model was trained with (its config.json; --k1
overrides it, logged), through llada_xdlm.evaluation.likelihood.nelbo_samples. The continuous-time bound does not
depend on the training schedule: it integrates over every alpha in (0, 1], whatever the schedule's time change.
The noise is drawn from one generator seeded by `--seed`, so a rerun gives the same number.
"""

import argparse
import json
import math
from collections.abc import Iterable, Sequence

import torch

from ..checkpoint import require_diffusion, resolve_setting
from .likelihood import nelbo_samples

# name -> (Hub dataset, config, split, text column). Loaded with `datasets` when the Hub is reachable.
HUB_CORPORA = {
    "wikitext2": ("Salesforce/wikitext", "wikitext-2-raw-v1", "test", "text"),
    "wikitext103": ("Salesforce/wikitext", "wikitext-103-raw-v1", "test", "text"),
    "ptb": ("ptb-text-only/ptb_text_only", None, "test", "sentence"),
    "lambada": ("EleutherAI/lambada_openai", "en", "test", "text"),
    "ag_news": ("fancyzhx/ag_news", None, "test", "text"),
    "pubmed": ("ccdv/pubmed-summarization", "document", "test", "abstract"),
    "arxiv": ("ccdv/arxiv-summarization", "document", "test", "abstract"),
    "lm1b": ("dvruette/lm1b", None, "test", "text"),
    "owt": ("Skylion007/openwebtext", None, "train", "text"),  # no validation split: streamed head of train
}
LOCAL_SUFFIXES = (".txt", ".json", ".jsonl")


def load_texts(name: str, max_docs: int | None = None, text_column: str = "text") -> list[str]:
    """Documents of a named Hub corpus (HUB_CORPORA) or a local file: .txt (one document per non-empty line) or
    .json/.jsonl (the `text_column` field of each row)."""
    if name.endswith(LOCAL_SUFFIXES):
        if name.endswith(".txt"):
            with open(name) as f:
                texts = [line.strip() for line in f if line.strip()]
        else:
            with open(name) as f:
                rows = [json.loads(line) for line in f if line.strip()]
            if rows and text_column not in rows[0]:
                raise ValueError(f"{name} has no column {text_column!r} (columns: {sorted(rows[0])}); "
                                 "pass --text_column.")
            texts = [row[text_column] for row in rows]
        return texts[:max_docs]
    if name not in HUB_CORPORA:
        raise ValueError(f"unknown corpus {name!r}: use one of {sorted(HUB_CORPORA)} or a local "
                         f"{'/'.join(LOCAL_SUFFIXES)} file.")
    from datasets import load_dataset

    path, config, split, column = HUB_CORPORA[name]
    try:
        rows = load_dataset(path, config, split=split, streaming=True)
    except Exception as err:  # offline, gated, or moved: say which corpus and where it was looked for
        raise RuntimeError(f"cannot load {name!r} ({path}, {config}, split {split}) with datasets: {err}") from err
    texts = []
    for row in rows:
        if row[column] and row[column].strip():
            texts.append(row[column])
        if max_docs is not None and len(texts) >= max_docs:
            break
    return texts


def text_blocks(texts: list[str], tokenizer, block_size: int, max_blocks: int | None = None) -> torch.Tensor:
    """The whole corpus packed by the training packer in one batch: LongTensor [N, block_size], at most max_blocks
    rows. Text holding the tokenizer's mask token is refused, as in training."""
    from ..training.data import pack_fn

    pack = pack_fn(tokenizer, block_size, "text", tokenizer.mask_token_id, random_length_prob=0.0, seed=0)
    blocks = pack({"text": list(texts)}, list(range(len(texts))))["input_ids"][:max_blocks]
    if not blocks:
        raise ValueError(f"the corpus has fewer tokens than one block of {block_size}; lower --block_size or add "
                         "text.")
    return torch.tensor(blocks)


def unigram_ppl(train_ids: Iterable[Sequence[int]], blocks: torch.Tensor, vocab_size: int) -> float:
    """Perplexity of the context-free baseline on `blocks` [N, L]: every token scored by its add-one smoothed
    frequency among the training tokens (`train_ids`: rows of ids, packed as for training). A model whose PPL bound
    is near it has learnt nothing beyond these frequencies."""
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    for ids in train_ids:
        counts += torch.bincount(torch.as_tensor(ids), minlength=vocab_size)
    log_p = (counts + 1).log() - (counts.sum() + vocab_size).log()
    return math.exp(-log_p[blocks.flatten()].mean().item())


def ppl_bound(model, blocks: torch.Tensor, *, mc_num: int = 16, seed: int = 0, k1: float | None = None,
              batch_size: int = 32) -> dict:
    """NELBO per token (nats) and PPL bound exp(NELBO) of `blocks` [N, L], every token scored, mc_num diffusion
    times per block, noise from a generator seeded with `seed`; k1 None: the one the model was trained with."""
    require_diffusion(model.config, "the diffusion perplexity bound")
    device = next(model.parameters()).device
    k1 = float(resolve_setting(model.config, "k1", k1))
    generator = torch.Generator(device=device).manual_seed(seed)
    blocks = blocks.to(device)
    targets = torch.ones_like(blocks, dtype=torch.bool)
    nelbo = nelbo_samples(model, blocks, targets, estimator="xdlm", k1=k1, mc_num=mc_num, batch_size=batch_size,
                          generator=generator)  # [N, mc_num] nats per block
    per_token = float(nelbo.mean(-1).sum()) / blocks.numel()
    stderr = float(nelbo.mean(-1).std()) / blocks.shape[1] / math.sqrt(len(blocks)) if len(blocks) > 1 else 0.0
    return dict(nelbo=per_token, ppl_bound=math.exp(min(per_token, 50.0)), nelbo_stderr=stderr,
                tokens=blocks.numel(), blocks=len(blocks), block_size=blocks.shape[1], mc_num=mc_num, seed=seed,
                k1=k1)


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """`xdlm ppl`: the PPL bound of a checkpoint on each corpus, one line each; returns {corpus: result}."""
    from .. import cli
    from ..checkpoint import load_checkpoint

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="diffusion checkpoint directory (model + tokenizer)")
    parser.add_argument("--datasets", nargs="+", required=True,
                        help=f"corpus names ({', '.join(HUB_CORPORA)}) and/or local .txt/.json/.jsonl files")
    parser.add_argument("--text_column", default="text", help="column of local json/jsonl files")
    parser.add_argument("--block_size", type=int, default=None, help="default: the model's max_sequence_length")
    parser.add_argument("--max_blocks", type=int, default=None, help="evaluate at most this many blocks per corpus")
    parser.add_argument("--mc_num", type=int, default=16, help="diffusion times t sampled per block")
    parser.add_argument("--k1", type=float, default=None, help="default: the k1 the checkpoint was trained with")
    cli.add_run_options(parser, batch_size=32)
    args = parser.parse_args(argv)

    model, tokenizer = load_checkpoint(args.model, args.device)
    block_size = args.block_size or model.config.max_sequence_length
    results = {}
    for name in args.datasets:
        texts = load_texts(name, text_column=args.text_column)
        blocks = text_blocks(texts, tokenizer, block_size, args.max_blocks)
        results[name] = r = ppl_bound(model, blocks, mc_num=args.mc_num, seed=args.seed, k1=args.k1,
                                      batch_size=args.batch_size)
        print(f"{name:>24}  PPL <= {r['ppl_bound']:10.2f}  (NELBO {r['nelbo']:.4f} +- {r['nelbo_stderr']:.4f} "
              f"nats/token, {r['tokens']} tokens, {r['mc_num']} t samples, seed {r['seed']}, k1 {r['k1']})")
    cli.write_json(args.output, results)
    return results
