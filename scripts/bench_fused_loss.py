"""Benchmark: fused_linear_xdlm_loss vs xdlm_loss(hidden @ W.T) (unfused), fwd+bwd, float32, CPU.

N tokens, hidden size D, V ids; gradients for hidden and the LM-head weight. Each variant runs in its own
subprocess: peak memory = max RSS minus RSS once the inputs exist; time = process CPU time (stable when other
jobs share the machine) and wall time of --repeats runs after --warmup runs, with --threads torch threads.
Variants: unfused; fused with loss.mean() (one upstream scale: gradients come from the forward pass);
fused with per-token weights (the weight gradient is recomputed in backward).

    python scripts/bench_fused_loss.py [--tokens 4096] [--hidden 512] [--vocab 126464] [--chunk-size 256]
"""

import argparse
import json
import sys

from llada_xdlm.benchmark import measure, run_variant


def child(args):
    import torch

    from llada_xdlm.diffusion import forward_process, xdlm_loss
    from llada_xdlm.ops import fused_linear_xdlm_loss

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    N, D, V, mask_id, k1 = args.tokens, args.hidden, args.vocab, args.vocab - 1, args.k1
    hidden = torch.randn(N, D).requires_grad_()
    weight = (torch.randn(V, D) / D**0.5).requires_grad_()
    clean = torch.randint(0, V - 1, (N,))
    alpha = (torch.rand(N // 256 + 1) * 0.98 + 0.01).repeat_interleave(256)[:N]  # one t per 256-token sequence
    noisy = forward_process(clean[None], alpha[None], k1, mask_id, V)[0]
    scale = torch.rand(N) if args.variant == "fused_per_token" else None

    def step():
        if args.variant == "unfused":
            loss = xdlm_loss((hidden @ weight.T)[None], noisy[None], clean[None], alpha[None], k1, mask_id)[0]
        else:
            loss = fused_linear_xdlm_loss(hidden, weight, noisy, clean, alpha, k1, mask_id, chunk_size=args.chunk_size)
        (loss.mean() if scale is None else (loss * scale).mean()).backward()
        hidden.grad = weight.grad = None

    print(json.dumps(measure(step, args.repeats, warmup=args.warmup)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--vocab", type=int, default=126464)
    p.add_argument("--k1", type=float, default=0.1)
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        return child(args)
    res = {}
    for variant in ("unfused", "fused", "fused_per_token"):
        cmd = [sys.executable, __file__, "--variant", variant] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "variant"]
        res[variant] = run_variant(cmd)
    print(f"N={args.tokens} D={args.hidden} V={args.vocab} k1={args.k1} float32, fwd+bwd (grads for hidden and weight), "
          f"CPU, {args.threads} thread(s), chunk_size={args.chunk_size}")
    base = res["unfused"]
    for name, label in (("unfused", "unfused (baseline)"), ("fused", "fused, loss.mean()"),
                        ("fused_per_token", "fused, per-token weights")):
        r = res[name]
        print(f"{label:26s} cpu {r['cpu_s']:7.2f} s  wall {r['wall_s']:7.2f} s  peak {r['peak_bytes'] / 2**30:5.2f} GiB  | ratio "
              f"cpu {r['cpu_s'] / base['cpu_s']:4.2f}x  wall {r['wall_s'] / base['wall_s']:4.2f}x  memory {r['peak_bytes'] / base['peak_bytes']:4.2f}x")


if __name__ == "__main__":
    main()
