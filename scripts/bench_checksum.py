"""Cost of the checkpoint manifest's checksum: xxh3-128 (ours, `llada_xdlm.training.checkpoints.checksum`) vs sha256
(hashlib, the baseline) on one large file, in one run, against the time to write that file.

The file is a safetensors file of random float32 weights, as in a checkpoint; it is hashed right after it is written
(as a save does) and the two digests alternate `--repeats` times.
    python scripts/bench_checksum.py [--gib 1 --repeats 3]
"""

import argparse
import hashlib
import os
import statistics
import tempfile
import time

import torch
from safetensors.torch import save_file

from llada_xdlm.training.checkpoints import checksum


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="file size in GiB")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    n = int(args.gib * 2**30 / 4)
    weights = {"weight": torch.randn(n)}
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "model.safetensors")
        start = time.perf_counter()
        save_file(weights, path)
        write = time.perf_counter() - start
        del weights
        times = {"sha256": [], "xxh3_128": []}
        for _ in range(args.repeats):
            for name, digest in (("sha256", sha256), ("xxh3_128", checksum)):
                start = time.perf_counter()
                digest(path)
                times[name].append(time.perf_counter() - start)
        size = os.path.getsize(path)
    sha, ours = statistics.median(times["sha256"]), statistics.median(times["xxh3_128"])
    gb = size / 1e9
    print(f"file {gb:.2f} GB, written in {write:.2f} s; median of {args.repeats}")
    print(f"sha256 (baseline): {sha:.2f} s  ({gb / sha:.2f} GB/s, {sha / write:.2f}x the write)")
    print(f"xxh3_128 (ours):   {ours:.2f} s  ({gb / ours:.2f} GB/s, {ours / write:.2f}x the write)")
    print(f"ratio sha256 / xxh3_128: {sha / ours:.1f}x")


if __name__ == "__main__":
    main()
