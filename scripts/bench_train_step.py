"""Training-step time of objective xdlm vs mdlm: same model, same batch, same run, CPU.

One step = XDLMTrainer.compute_loss (noise, forward, loss) + backward + AdamW step. The two objectives are timed
interleaved (xdlm, mdlm, xdlm, ...) so machine load hits both alike; the median is reported.
    python scripts/bench_train_step.py [--d-model 256 --layers 4 --vocab 32768 --length 512 --batch 4 --threads 1]
Target: xdlm <= 1.10x mdlm.
"""

import argparse
import statistics
import tempfile
import time

import torch
from transformers import TrainingArguments

from llada_xdlm import LLaDAConfig, LLaDAModelLM
from llada_xdlm.training.args import DiffusionArguments
from llada_xdlm.training.trainer import XDLMTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loss-implementation", default="fused", choices=["fused", "unfused"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    V = args.vocab
    config = LLaDAConfig(d_model=args.d_model, n_layers=args.layers, n_heads=4, n_kv_heads=4,
                         mlp_hidden_size=3 * args.d_model, vocab_size=V, embedding_size=V,
                         max_sequence_length=args.length, mask_token_id=V - 1, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1)
    torch.manual_seed(0)
    model = LLaDAModelLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    clean = torch.randint(2, V - 1, (args.batch, args.length))
    batch = {"input_ids": clean, "labels": clean.clone()}
    training_args = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to="none")
    trainers = {
        objective: XDLMTrainer(model=model, args=training_args, mask_token_id=V - 1,
                               diffusion_args=DiffusionArguments(objective=objective,
                                                                 loss_implementation=args.loss_implementation))
        for objective in ("xdlm", "mdlm")
    }

    def step(objective: str) -> float:
        start = time.perf_counter()
        loss = trainers[objective].compute_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    times = {objective: [] for objective in trainers}
    for objective in trainers:  # warm-up
        step(objective)
    for _ in range(args.repeats):
        for objective in trainers:
            times[objective].append(step(objective))
    xdlm, mdlm = (statistics.median(times[k]) for k in ("xdlm", "mdlm"))
    print(f"model d_model={args.d_model} layers={args.layers} V={V} L={args.length} batch={args.batch}, "
          f"loss {args.loss_implementation}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"mdlm (baseline) step: {mdlm:.3f} s")
    print(f"xdlm (ours)     step: {xdlm:.3f} s")
    print(f"ratio xdlm / mdlm: {xdlm / mdlm:.3f}x (target <= 1.10x)")


if __name__ == "__main__":
    main()
