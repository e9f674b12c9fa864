"""Benchmark: xdlm_loss vs plain masked cross-entropy on the same [B, L, V] float32 logits (CPU).

Each variant runs in its own subprocess (peak memory = max RSS minus RSS once the inputs exist); fwd+bwd
time is the median of --repeats runs after one warm-up, as process CPU time (stable when other jobs share the
machine) and wall time, with --threads torch threads (default 1: OpenMP barriers make multi-threaded wall
times meaningless on a loaded machine). Prints baseline, ours and the ratios.

    python scripts/bench_loss.py [--tokens 1024] [--vocab 126464] [--k1 0.1] [--threads 1]
"""

import argparse
import json
import sys

from llada_xdlm.benchmark import measure, run_variant


def child(args):
    import torch

    from llada_xdlm.diffusion import forward_process, xdlm_loss

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, L, V, mask_id = 4, args.tokens // 4, args.vocab, args.vocab - 1
    logits = torch.randn(B, L, V).requires_grad_()
    clean = torch.randint(0, V - 1, (B, L))
    alpha = torch.rand(B) * 0.98 + 0.01
    k1 = 0.0 if args.variant == "masked_ce" else args.k1
    noisy = forward_process(clean, alpha, k1, mask_id, V)

    def step():
        if args.variant == "masked_ce":  # LLaDA / MDLM: CE on masked tokens / beta
            ce = torch.nn.functional.cross_entropy(logits.view(-1, V), clean.view(-1), reduction="none").view(B, L)
            loss = ce * (noisy == mask_id) / (1 - alpha[:, None])
        else:
            loss = xdlm_loss(logits, noisy, clean, alpha, k1, mask_id)
        loss.mean().backward()
        logits.grad = None

    print(json.dumps(measure(step, args.repeats, warmup=1)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=1024, help="B * L (B = 4)")
    p.add_argument("--vocab", type=int, default=126464)
    p.add_argument("--k1", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        return child(args)
    res = {}
    for name, variant, k1 in (("masked_ce", "masked_ce", 0.0), ("xdlm_k1_0", "xdlm", 0.0), ("xdlm", "xdlm", args.k1)):
        cmd = [sys.executable, __file__, "--tokens", str(args.tokens), "--vocab", str(args.vocab), "--k1", str(k1),
               "--repeats", str(args.repeats), "--threads", str(args.threads), "--variant", variant]
        res[name] = run_variant(cmd)
    print(f"[B*L, V] = [{args.tokens}, {args.vocab}] float32 logits, fwd+bwd, CPU, {args.threads} thread(s)")
    ce = res["masked_ce"]
    for name, label in (("masked_ce", "masked CE (baseline)"), ("xdlm_k1_0", "xdlm_loss k1=0"), ("xdlm", f"xdlm_loss k1={args.k1}")):
        r = res[name]
        print(f"{label:22s} cpu {r['cpu_s']:6.3f} s  wall {r['wall_s']:6.3f} s  peak {r['peak_bytes'] / 2**30:5.2f} GiB  | ratio "
              f"cpu {r['cpu_s'] / ce['cpu_s']:4.2f}x  wall {r['wall_s'] / ce['wall_s']:4.2f}x  memory {r['peak_bytes'] / ce['peak_bytes']:4.2f}x")


if __name__ == "__main__":
    main()
