"""Benchmark generate() on CPU, all numbers from the same run:

1. overhead: generate() wall time / (steps x one forward of the same batch). A small model with LLaDA's vocabulary
   (V = 126464 logits) makes the per-step sampler work (softmax statistics over V, top-k, bookkeeping) show.
   generate() runs the LM head on the generated window only, so it is also timed against steps x such a forward
   ("sampler cost"): that ratio is the sampler's own work, apart from the saving on the prompt's logits.
2. against the reference sampler's structure, re-implemented below (full-canvas float64 softmax, float64 Gumbel,
   Python loops over the rows for the transfer counts and the top-k): same tokens at temperature 0, and the speed-up.

    python scripts/bench_generate.py            # batch 8, V 126464, d_model 256, prompt 32, gen 64, 8 steps
"""

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from llada_xdlm import LLaDAConfig, LLaDAModelLM, generate


def reference_generate(model, prompt, steps, gen_length, block_length, temperature, mask_id):
    """The reference LLaDA sampler's structure (our own re-implementation), with one fix so that both samplers are
    correct and comparable: the mask logit is set to -inf (the reference's argmax can pick the mask)."""

    def add_gumbel_noise(logits, temperature):
        if temperature == 0:
            return logits
        logits = logits.to(torch.float64)
        noise = torch.rand_like(logits, dtype=torch.float64)
        return logits.exp() / (-torch.log(noise)) ** temperature

    def num_transfer_tokens(block_mask, steps):
        count = block_mask.sum(dim=1, keepdim=True)
        base, rem = count // steps, count % steps
        out = torch.zeros(count.size(0), steps, dtype=torch.int64) + base
        for i in range(count.size(0)):
            out[i, : rem[i]] += 1
        return out

    B, P = prompt.shape
    x = torch.full((B, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt.clone()
    num_blocks = gen_length // block_length
    steps = steps // num_blocks
    for nb in range(num_blocks):
        block_mask = x[:, P + nb * block_length: P + (nb + 1) * block_length] == mask_id
        counts = num_transfer_tokens(block_mask, steps)
        for i in range(steps):
            mask_index = x == mask_id
            logits = model(x).logits
            logits[..., mask_id] = -np.inf
            x0 = torch.argmax(add_gumbel_noise(logits, temperature), dim=-1)
            p = F.softmax(logits.to(torch.float64), dim=-1)
            x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)
            x0_p[:, P + (nb + 1) * block_length:] = -np.inf
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, -np.inf)
            transfer = torch.zeros_like(x0, dtype=torch.bool)
            for j in range(confidence.shape[0]):
                _, select = torch.topk(confidence[j], k=int(counts[j, i]))
                transfer[j, select] = True
            x[transfer] = x0[transfer]
    return x


def window_forward(model, canvas, prompt_length):
    """One forward with the LM head on the generated positions only, as generate() runs it: the baseline that
    isolates the sampler's own per-step work from the saving of not computing the prompt's logits."""
    hidden = model(canvas, compute_logits=False).last_hidden_state  # [B, L, D]
    return model.get_output_embeddings()(hidden[:, prompt_length:])  # [B, G, V]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=126464)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--prompt-length", type=int, default=32)
    ap.add_argument("--gen-length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    args = ap.parse_args()

    V, mask_id = args.vocab, 126336 if args.vocab > 126336 else args.vocab - 1
    config = LLaDAConfig(d_model=args.d_model, n_layers=args.layers, n_heads=4, n_kv_heads=4,
                         mlp_hidden_size=2 * args.d_model, vocab_size=V, embedding_size=V, max_sequence_length=4096,
                         mask_token_id=mask_id, eos_token_id=min(126081, V - 2), pad_token_id=min(126081, V - 2),
                         bos_token_id=min(126080, V - 3))
    torch.manual_seed(0)
    model = LLaDAModelLM(config).eval()
    prompt = torch.randint(0, mask_id, (args.batch, args.prompt_length))
    canvas = torch.cat([prompt, torch.full((args.batch, args.gen_length), mask_id)], dim=1)  # step 1's input
    kw = dict(steps=args.steps, gen_length=args.gen_length, temperature=0.0)
    print(f"batch {args.batch}, V {V}, d_model {args.d_model}, layers {args.layers}, prompt {args.prompt_length}, "
          f"gen {args.gen_length}, steps {args.steps}, threads {torch.get_num_threads()}, {args.repeats} rounds")

    runs = {
        "steps x forward": lambda: [model(canvas).logits for _ in range(args.steps)],
        "steps x window": lambda: [window_forward(model, canvas, args.prompt_length) for _ in range(args.steps)],
        "ours k1=0": lambda: generate(model, prompt, k1=0.0, **kw),
        "ours k1=0.1": lambda: generate(model, prompt, k1=0.1, **kw),
        "reference": lambda: reference_generate(model, prompt, args.steps, args.gen_length, args.gen_length, 0.0,
                                                mask_id),
    }
    times = {name: [] for name in runs}
    outs = {}
    with torch.no_grad():
        for _ in range(args.repeats):  # interleaved rounds: load from other processes hits all four alike
            for name, fn in runs.items():
                t, outs[name] = timed(fn)
                times[name].append(t)
    ratio = lambda a, b: [x / y for x, y in zip(times[a], times[b])]  # noqa: E731  per-round ratios
    for name, ts in times.items():
        print(f"{name:16s} {min(ts):8.2f} s   (rounds: {', '.join(f'{t:.2f}' for t in ts)})")
    for name in ("ours k1=0", "ours k1=0.1"):
        r = ratio(name, "steps x forward")
        print(f"1. overhead {name:12s} = generate / (steps x forward): best {min(r):.3f}, median "
              f"{statistics.median(r):.3f}   (target <= 1.05)")
        r = ratio(name, "steps x window")
        print(f"   sampler cost {name:12s} = generate / (steps x window forward): median {statistics.median(r):.3f}")
    r = ratio("reference", "ours k1=0")
    print(f"2. speed-up reference / ours k1=0: best {max(r):.2f}x, median {statistics.median(r):.2f}x   (target >= 2)")
    print(f"   reference overhead = reference / (steps x forward): median "
          f"{statistics.median(ratio('reference', 'steps x forward')):.3f}")
    print(f"   same tokens at temperature 0: {torch.equal(outs['ours k1=0'], outs['reference'])}")


if __name__ == "__main__":
    main()
