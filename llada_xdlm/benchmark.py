"""Time and peak memory of one benchmark variant, measured in its own process so that the peak is its own
(scripts/bench_loss.py, scripts/bench_fused_loss.py). CPU time is the stable number on a shared machine; wall time
is reported beside it."""

import json
import resource
import statistics
import subprocess
import time


def rss_bytes() -> int:
    """Resident memory of this process now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(step, repeats: int, warmup: int = 0) -> dict:
    """Median process-CPU and wall seconds of `repeats` timed calls of step() after `warmup` untimed ones, and the
    peak memory they took: the process's max RSS minus its RSS before the first call (the inputs already exist)."""
    rss0 = rss_bytes()
    for _ in range(warmup):
        step()
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        step()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    return {"cpu_s": statistics.median(cpu), "wall_s": statistics.median(wall), "peak_bytes": peak}


def run_variant(command: list[str]) -> dict:
    """Run one variant's process and return the measurement it printed as its last line (JSON)."""
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])
