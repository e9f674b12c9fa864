"""Benchmark fast decoding against the uncached sampler, all numbers from one run: generate() with cache "none",
"prefix" and "dual", each with the fixed schedule and with a confidence threshold, at the same `steps`. For every
run it prints the model forwards, the wall time and the CPU time of this process, the speed-up over cache "none"
with the same threshold (by wall and by CPU time) and over the fixed-schedule "none" run, and the share of
generated tokens equal to the fixed-schedule "none" output. On a shared CPU the wall time also counts the waits for
other processes; the CPU time (all threads) counts the work only. On a GPU read the wall time.

    python scripts/bench_cache.py                 # CPU: d_model 1024, 8 layers, V 32768, prompt 512, gen 256
    python scripts/bench_cache.py --device cuda --dtype bfloat16 --d-model 4096 --layers 32 --heads 32 \
        --mlp 12288 --vocab 126464                # LLaDA-8B's width and depth, random weights
    python scripts/bench_cache.py --model outputs/quickstart --data data/stdlib_docs/validation.jsonl \
        --prompt-length 32 --gen-length 64 --block-length 16 --steps 64 --batch 8   # a trained model

A model with random weights predicts every token with probability ~1/V, so no threshold is ever exceeded there:
the threshold rows measure its cost only. With --model (a trained checkpoint and its tokenizer) the prompts are
the first tokens of the texts in --data, and the threshold shows how many forwards it saves. --evaluator (a causal
model of the same data, e.g. the AR evaluator `xdlm reproduce-small` trains) adds the quality of each run's
continuations: Gen-PPL, its change relative to the fixed-schedule uncached run, and the mean unigram entropy (nats;
it falls when a sampler repeats itself). With --steps equal to --gen-length the fixed schedule commits one token per
step, the baseline a threshold is measured against:

    python scripts/bench_cache.py --model MODEL --evaluator EVALUATOR --data VALIDATION.jsonl --prompt-length 64 \
        --gen-length 128 --block-length 32 --steps 128 --batch 16
"""

import argparse
import json
import os
import time

import torch

from llada_xdlm import LLaDAConfig, LLaDAModelLM, generate
from llada_xdlm.evaluation.gen_ppl import gen_ppl, load_evaluator, unigram_entropy
from llada_xdlm.sampling import CACHES


def synthetic_model(args) -> LLaDAModelLM:
    V = args.vocab
    config = LLaDAConfig(d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, n_kv_heads=args.heads,
                         mlp_hidden_size=args.mlp, vocab_size=V, embedding_size=V, max_sequence_length=8192,
                         mask_token_id=V - 1, eos_token_id=V - 2, pad_token_id=V - 2, bos_token_id=V - 3)
    torch.manual_seed(0)
    return LLaDAModelLM(config)


def text_prompts(path: str, tokenizer, batch: int, length: int) -> torch.Tensor:
    """[batch, length]: the first `length` tokens of the first `batch` texts of a JSONL file that have as many."""
    rows = []
    with open(path) as f:
        for line in f:
            ids = tokenizer(json.loads(line)["text"])["input_ids"]
            if len(ids) >= length:
                rows.append(ids[:length])
            if len(rows) == batch:
                return torch.tensor(rows)
    raise ValueError(f"{path} has fewer than {batch} texts of at least {length} tokens; lower --batch or "
                     f"--prompt-length.")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a trained checkpoint (with its tokenizer) instead of random weights")
    ap.add_argument("--data", help="JSONL with a 'text' field: the prompts for --model")
    ap.add_argument("--evaluator", help="a causal LM of the same data: Gen-PPL of every run's continuations")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--mlp", type=int, default=3072)
    ap.add_argument("--prompt-length", type=int, default=512)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--k1", type=float, default=0.0)
    ap.add_argument("--threshold", type=float, nargs="+", default=[0.9])
    args = ap.parse_args()
    if (args.model is None) != (args.data is None):
        ap.error("--model and --data go together: a trained model is prompted with texts.")
    if args.evaluator and not args.model:
        ap.error("--evaluator scores the continuations of a trained model: give --model and --data too.")
    evaluator = load_evaluator(args.evaluator, args.device) if args.evaluator else None

    dtype = getattr(torch, args.dtype)
    if args.model:
        from transformers import AutoTokenizer

        model = LLaDAModelLM.from_pretrained(args.model, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    else:
        model = synthetic_model(args).to(dtype)
    model.to(args.device).eval()
    c = model.config
    forwards = []
    model.register_forward_pre_hook(lambda *_: forwards.append(1))
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"{args.model or 'random weights'}: d_model {c.d_model}, {c.n_layers} layers, V {c.embedding_size}, "
          f"{args.dtype} on {args.device} ({torch.get_num_threads()} threads); prompt {args.prompt_length}, "
          f"gen {args.gen_length}, block {args.block_length}, steps {args.steps}, k1 {args.k1}, "
          f"temperature {args.temperature}; "
          f"load average {os.getloadavg()[0]:.1f}")

    for B in args.batch:
        if args.model:
            prompt = text_prompts(args.data, tokenizer, B, args.prompt_length)
        else:
            seed = torch.Generator().manual_seed(B)
            prompt = torch.randint(0, c.mask_token_id, (B, args.prompt_length), generator=seed)
        prompt = prompt.to(args.device)
        quality = f" {'gen-ppl':>8s} {'change':>7s} {'entropy':>7s}" if evaluator else ""
        print(f"\nbatch {B}\n{'cache':8s} {'threshold':>9s} {'forwards':>8s} {'fwd x fixed':>11s} {'wall s':>8s} "
              f"{'cpu s':>8s} {'x none':>7s} {'x none cpu':>10s} {'x fixed cpu':>11s} {'agreement':>9s}{quality}")
        runs, ppls = {}, {}
        for threshold in (None, *args.threshold):
            for cache in CACHES:
                forwards.clear()
                sync()
                wall, cpu = time.perf_counter(), time.process_time()
                out = generate(model, prompt, steps=args.steps, gen_length=args.gen_length,
                               block_length=args.block_length, k1=args.k1, cache=cache, threshold=threshold,
                               temperature=args.temperature, generator=torch.Generator(args.device).manual_seed(0))
                sync()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                runs[cache, threshold] = (wall, cpu, out[:, args.prompt_length:], len(forwards))
                none_wall, none_cpu, _, _ = runs["none", threshold]
                fixed = runs["none", None]
                agreement = (runs[cache, threshold][2] == fixed[2]).float().mean().item()
                row = (f"{cache:8s} {str(threshold):>9s} {len(forwards):8d} {fixed[3] / len(forwards):11.2f} "
                       f"{wall:8.2f} {cpu:8.2f} {none_wall / wall:7.2f} {none_cpu / cpu:10.2f} {fixed[1] / cpu:11.2f} "
                       f"{agreement:9.3f}")
                if evaluator:
                    generated = out[:, args.prompt_length:].cpu()
                    texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
                    ppl = gen_ppl(*evaluator, texts)
                    ppls[cache, threshold] = ppl
                    change = ppl / ppls["none", None] - 1
                    row += f" {ppl:8.2f} {change:+7.1%} {unigram_entropy(generated):7.3f}"
                print(row, flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
