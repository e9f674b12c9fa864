"""Generative perplexity: sample N sequences from a diffusion LM in a few steps, score them with an autoregressive
evaluator (gpt2-large by default; any causal LM path, or a LLaDA checkpoint trained with `objective: ar`), and
report Gen-PPL together with the mean unigram entropy of the samples (low entropy flags repetitive, degenerate
text that a language model happily scores as likely).

    xdlm gen-ppl --model outputs/owt_small --evaluator gpt2-large --num_samples 256 --length 1024 --steps 8 32

Samples are unconditional (an empty prompt: the canvas is `length` masks, or the prior draw for the ancestral
sampler). They are decoded without special tokens and re-tokenised by the evaluator's tokenizer; Gen-PPL is
exp(total NLL / total scored tokens), each sample scored after the evaluator's BOS token when it has one.
Entropy is computed per sample on the diffusion model's token ids, then averaged.
"""

import argparse
import math

import torch

from ..modeling import is_backbone
from ..sampling import SamplerConfig, generate


@torch.no_grad()
def sample_sequences(model, num_samples: int, length: int, steps: int, *, sampler: str = "ancestral",
                     batch_size: int = 16, seed: int = 0, k1: float | None = None, temperature: float = 1.0,
                     top_p: float | None = None) -> torch.Tensor:
    """N unconditional samples [N, length] from llada_xdlm.generate in `steps` forwards. The remasking sampler
    draws candidates at `temperature` (0 would make every unconditional sample the same); the ancestral sampler
    draws from the posterior itself (optionally restricted to the top_p nucleus)."""
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples={num_samples} and batch_size={batch_size} must be >= 1.")
    options = dict(top_p=top_p) if sampler == "ancestral" else dict(temperature=temperature)
    config = SamplerConfig(steps=steps, gen_length=length, sampler=sampler, k1=k1, **options)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    out = []
    for start in range(0, num_samples, batch_size):
        b = min(batch_size, num_samples - start)
        empty = torch.empty(b, 0, dtype=torch.long, device=device)  # [b, 0]: no prompt
        out.append(generate(model, empty, config=config, generator=generator))
    return torch.cat(out).cpu()  # [N, length]


def unigram_entropy(samples: torch.Tensor) -> float:
    """Mean over samples of the entropy (nats) of each sample's token frequency distribution. samples [N, L]."""
    entropies = []
    for row in samples:
        counts = torch.unique(row, return_counts=True)[1].double()
        p = counts / counts.sum()
        entropies.append(float(-(p * p.log()).sum()))
    return sum(entropies) / len(entropies)


def load_evaluator(path: str, device: str = "cpu"):
    """(model, tokenizer) of a causal LM. A LLaDA checkpoint is run with is_causal=True (train it with objective ar)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
    return model, tokenizer


@torch.no_grad()
def gen_ppl(evaluator, tokenizer, texts: list[str], *, batch_size: int = 8, max_length: int | None = None) -> float:
    """exp(total NLL / total tokens) of `texts` under the causal evaluator, each text after its BOS when the
    tokenizer has one (else its first token is context only), truncated to `max_length` evaluator tokens."""
    device = next(evaluator.parameters()).device
    max_length = max_length or getattr(evaluator.config, "max_position_embeddings", None) or 1024
    bos = tokenizer.bos_token_id
    rows = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        ids = ([bos] if bos is not None else []) + ids
        rows.append(ids[:max_length])
    causal = {"is_causal": True} if is_backbone(evaluator) else {}
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = [r for r in rows[start : start + batch_size] if len(r) >= 2]
        if not batch:
            continue
        L = max(len(r) for r in batch)
        ids = torch.zeros(len(batch), L, dtype=torch.long)
        mask = torch.zeros(len(batch), L, dtype=torch.long)
        for i, r in enumerate(batch):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
        ids, mask = ids.to(device), mask.to(device)
        logits = evaluator(input_ids=ids, attention_mask=mask, **causal).logits[:, :-1].float()  # [b, L-1, V]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # [b, L-1]
        scored = mask[:, 1:].bool()
        total_nll += float(nll[scored].double().sum())
        total_tokens += int(scored.sum())
    if total_tokens == 0:
        raise ValueError("no sample has a token to score after re-tokenisation: the samples decode to empty text.")
    return math.exp(total_nll / total_tokens)


def measure(model, tokenizer, evaluator, evaluator_tokenizer, *, steps_list, num_samples: int, length: int,
            sampler: str = "ancestral", batch_size: int = 16, seed: int = 0, k1: float | None = None,
            temperature: float = 1.0, top_p: float | None = None) -> list[dict]:
    """One result dict per number of steps: gen_ppl, entropy and the settings that produced them."""
    results = []
    for steps in steps_list:
        samples = sample_sequences(model, num_samples, length, steps, sampler=sampler, batch_size=batch_size,
                                   seed=seed, k1=k1, temperature=temperature, top_p=top_p)
        texts = tokenizer.batch_decode(samples, skip_special_tokens=True)
        results.append(dict(
            steps=steps, sampler=sampler, num_samples=num_samples, length=length, seed=seed,
            k1=float(model.config.k1 if k1 is None else k1),
            gen_ppl=gen_ppl(evaluator, evaluator_tokenizer, texts, batch_size=batch_size),
            entropy=unigram_entropy(samples), example=texts[0][:200],
        ))
    return results


def main(argv: list[str] | None = None, prog: str | None = None) -> list[dict]:
    """`xdlm gen-ppl`: Gen-PPL and entropy of a checkpoint's samples, one line per number of steps."""
    from .. import cli
    from ..checkpoint import load_checkpoint, resolve_model_path

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="diffusion checkpoint directory (model + tokenizer)")
    parser.add_argument("--evaluator", default="gpt2-large", help="causal LM path or Hub id (default gpt2-large)")
    parser.add_argument("--num_samples", type=int, default=64)
    parser.add_argument("--length", type=int, default=128, help="tokens per sample (the model's training length)")
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--sampler", choices=["ancestral", "remask"], default="ancestral")
    parser.add_argument("--k1", type=float, default=None, help="sampler k1 (default: the checkpoint's config.k1)")
    parser.add_argument("--temperature", type=float, default=1.0, help="remask sampler only")
    parser.add_argument("--top_p", type=float, default=None, help="ancestral sampler only")
    cli.add_run_options(parser, batch_size=16)
    args = parser.parse_args(argv)
    if args.sampler == "ancestral" and args.temperature != 1.0:
        parser.error("--temperature applies to --sampler remask; the ancestral sampler takes --top_p.")

    evaluator_path = resolve_model_path(args.evaluator)  # before the model loads: a missing folder fails at once
    model, tokenizer = load_checkpoint(args.model, args.device)
    evaluator, evaluator_tokenizer = load_evaluator(evaluator_path, args.device)
    results = measure(model, tokenizer, evaluator, evaluator_tokenizer, steps_list=args.steps,
                      num_samples=args.num_samples, length=args.length, sampler=args.sampler,
                      batch_size=args.batch_size, seed=args.seed, k1=args.k1, temperature=args.temperature,
                      top_p=args.top_p)
    for r in results:
        print(f"steps {r['steps']:>4}  Gen-PPL {r['gen_ppl']:10.2f}  entropy {r['entropy']:.3f}  "
              f"({r['sampler']}, k1={r['k1']}, {r['num_samples']} x {r['length']} tokens)")
    cli.write_json(args.output, results)
    return results
