"""Benchmark confidence-threshold decoding on a trained model with a task metric, all numbers from one run: the
forwards generate() needs and the task's exact-match accuracy, one token per step (the baseline) against
`threshold` decoding with the same `steps` as upper bound, without and with a KV cache.

The model is one this repository trains on a CPU in minutes, through the real entry point (`xdlm train`): a
character-level LLaDA-architecture model (MDLM objective) for a copy task, `<letters>=<the same letters>`. The task
has one right answer that a trained model predicts with confidence, as LLaDA-8B does for much of a GSM8K answer,
so the threshold has something to act on; the text models of `xdlm reproduce-small` are rarely 90% sure of a
character and commit one token per step at threshold 0.9 (measured there too: `scripts/bench_cache.py`).

    python scripts/bench_threshold.py                      # trains once into outputs/bench_threshold, then measures
    python scripts/bench_threshold.py --threshold 0.9 0.7  # more thresholds
"""

import argparse
import json
import os
import random
import time

import torch
import yaml

from llada_xdlm import LLaDAModelLM, generate
from llada_xdlm.sampling import CACHES
from llada_xdlm.tokenization import build_char_tokenizer
from llada_xdlm.training.train import main as train

ALPHABET = "abcdefghij"


def copy_rows(n: int, length: int, seed: int) -> list[str]:
    """n rows `s=s`, s a random string of `length` letters of ALPHABET."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        s = "".join(rng.choice(ALPHABET) for _ in range(length))
        rows.append(f"{s}={s}")
    return rows


def train_model(work: str, args) -> str:
    """Train (once) the copy model through `xdlm train`'s entry point; its output folder."""
    out = os.path.join(work, "model")
    if os.path.isfile(os.path.join(out, "config.json")):
        return out
    os.makedirs(work, exist_ok=True)
    tokenizer = build_char_tokenizer(ALPHABET + "=")
    tokenizer.save_pretrained(os.path.join(work, "tokenizer"))
    with open(os.path.join(work, "train.jsonl"), "w") as f:
        for row in copy_rows(args.train_rows, args.length, seed=0):
            f.write(json.dumps({"text": row}) + "\n")
    block = 2 * args.length + 2  # s, "=", s, and the EOS the packer appends: one row per block
    recipe = dict(
        model_config=dict(d_model=64, n_layers=4, n_heads=4, n_kv_heads=4, mlp_hidden_size=192,
                          max_sequence_length=block, rope_theta=10000.0),
        tokenizer_name_or_path=os.path.join(work, "tokenizer"), data_files=[os.path.join(work, "train.jsonl")],
        block_size=block, random_length_prob=0.0, objective="mdlm", schedule="linear", output_dir=out,
        use_cpu=True, seed=0, max_steps=args.train_steps, per_device_train_batch_size=64, learning_rate=3e-3,
        lr_scheduler_type="cosine", warmup_steps=30, weight_decay=0.01, logging_steps=100, save_strategy="no",
        report_to="none", disable_tqdm=True,
    )
    path = os.path.join(work, "recipe.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(recipe, f, sort_keys=False)
    start = time.perf_counter()
    train([path])
    print(f"trained in {time.perf_counter() - start:.0f} s", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work_dir", default=os.path.join("outputs", "bench_threshold"))
    ap.add_argument("--length", type=int, default=23, help="letters to copy (+ the EOS: the tokens generated)")
    ap.add_argument("--train_rows", type=int, default=20000)
    ap.add_argument("--train_steps", type=int, default=600)
    ap.add_argument("--test_rows", type=int, default=64)
    ap.add_argument("--block-length", type=int, default=8)
    ap.add_argument("--threshold", type=float, nargs="+", default=[0.9])
    args = ap.parse_args()

    model_dir = train_model(args.work_dir, args)
    model = LLaDAModelLM.from_pretrained(model_dir).eval()
    tokenizer = build_char_tokenizer(ALPHABET + "=")
    rows = copy_rows(args.test_rows, args.length, seed=1)  # another seed: strings not trained on (10^24 of them)
    prompts = torch.tensor([tokenizer(r[: args.length + 1])["input_ids"] for r in rows])  # "s=" [N, length + 1]
    answers = [r[args.length + 1 :] for r in rows]
    gen_length = args.length + 1  # the copy and its EOS, as every training row ends
    forwards = []
    model.register_forward_pre_hook(lambda *_: forwards.append(1))
    print(f"copy task: {args.length} letters + EOS, {args.test_rows} held-out rows in one batch, block "
          f"{args.block_length}, steps {gen_length} (one token per step without a threshold); "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"{'cache':8s} {'threshold':>9s} {'forwards':>8s} {'fwd x fixed':>11s} {'cpu s':>7s} {'exact':>6s} "
          f"{'chars':>6s}")
    fixed = None
    for threshold in (None, *args.threshold):
        for cache in CACHES:
            forwards.clear()
            cpu = time.process_time()
            with torch.no_grad():
                out = generate(model, prompts, steps=gen_length, gen_length=gen_length,
                               block_length=args.block_length, cache=cache, threshold=threshold)
            cpu = time.process_time() - cpu
            texts = tokenizer.batch_decode(out[:, prompts.shape[1] :], skip_special_tokens=True)
            exact = sum(t == a for t, a in zip(texts, answers)) / len(rows)  # EOS skipped: nothing may follow
            chars = sum(x == y for t, a in zip(texts, answers) for x, y in zip(t, a)) / (len(rows) * args.length)
            fixed = fixed or len(forwards)
            print(f"{cache:8s} {str(threshold):>9s} {len(forwards):8d} {fixed / len(forwards):11.2f} {cpu:7.2f} "
                  f"{exact:6.3f} {chars:6.3f}", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
