"""Start-up time of resuming a streaming run at step K: from the data position saved in the checkpoint (ours) vs
replaying the K steps' batches (the Trainer's default: re-read, re-tokenise and re-pack everything seen so far).

One run: train a tiny model K steps on a stream of data/stdlib_docs (repeated to be long enough), checkpoint, then
resume that checkpoint both ways, alternately, `--repeats` times each. Start-up = from `trainer.train()` to the first
batch in hand (both include loading the weights and optimizer; only the data positioning differs).
    python scripts/bench_resume.py [--steps 200 --batch 16 --block 128 --repeats 3]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import yaml

from llada_xdlm.training import train
from llada_xdlm.training.checkpoints import write_manifest
from llada_xdlm.training.trainer import XDLMTrainer

CORPUS = os.path.join(os.path.dirname(__file__), "..", "data", "stdlib_docs", "train.jsonl")


class TimedTrainer(XDLMTrainer):
    """Records the seconds from train() to the first batch of the resumed run."""

    startup = None

    def train(self, *args, **kwargs):
        self._start = time.perf_counter()
        return super().train(*args, **kwargs)

    def get_batch_samples(self, *args, **kwargs):
        batches = super().get_batch_samples(*args, **kwargs)
        if TimedTrainer.startup is None:
            TimedTrainer.startup = time.perf_counter() - self._start
        return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="K: the step the run resumes at")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="bench_resume_")
    with open(CORPUS) as f:
        text = f.read()
    corpus = os.path.join(work, "corpus.jsonl")
    with open(corpus, "w") as f:  # ~100k tokens per copy at 512 ids: enough copies for K steps
        f.write(text * max(1, -(-args.steps * args.batch * args.block // 80_000)))
    recipe = dict(
        model_config=dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden_size=128,
                          max_sequence_length=args.block),
        tokenizer_vocab_size=512, tokenizer_train_rows=2000, data_files=[corpus], streaming=True,
        block_size=args.block, use_cpu=True, seed=0, max_steps=args.steps, per_device_train_batch_size=args.batch,
        learning_rate=1e-3, logging_steps=args.steps, save_strategy="steps", save_steps=args.steps,
        report_to="none", disable_tqdm=True, output_dir=os.path.join(work, "run"),
    )
    path = os.path.join(work, "recipe.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(recipe, f)
    train.main([path])
    ours = os.path.join(work, "run", f"checkpoint-{args.steps}")
    replay = os.path.join(work, "replay", f"checkpoint-{args.steps}")
    shutil.copytree(ours, replay)
    os.remove(os.path.join(replay, "data_state_0.pt"))  # no saved position: the Trainer replays
    write_manifest(replay)

    train.XDLMTrainer = TimedTrainer
    times = {"ours": [], "replay": []}
    for i in range(args.repeats):
        for name, checkpoint in (("ours", ours), ("replay", replay)):
            TimedTrainer.startup = None
            train.main([path, "--max_steps", str(args.steps + 1), "--output_dir", os.path.join(work, f"{name}{i}"),
                        "--resume_from_checkpoint", checkpoint])
            times[name].append(TimedTrainer.startup)
    shutil.rmtree(work)
    ours_s, replay_s = statistics.median(times["ours"]), statistics.median(times["replay"])
    sequences = args.steps * args.batch
    print(f"streaming run resumed at step {args.steps} ({sequences} sequences of {args.block} tokens seen), "
          f"median of {args.repeats}", file=sys.stderr, flush=True)
    print(f"replay (baseline) start-up:     {replay_s:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times['replay'])})")
    print(f"saved position (ours) start-up: {ours_s:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times['ours'])})")
    print(f"ratio replay / ours: {replay_s / ours_s:.1f}x")


if __name__ == "__main__":
    main()
