"""Benchmark: the cost of running one generated program in the sandbox vs in a plain subprocess.

Runs an MBPP program (task 2's reference solution and its three asserts) --runs times in each mode, alternating
the modes so that load from other jobs hits both alike, one program at a time: sandboxed (bubblewrap, the
default) and unsandboxed (XDLM_CODE_EVAL_NO_SANDBOX=1, a plain `python -I` subprocess with the same limits).
Prints the median wall time per program (start to result, what an evaluation waits for), the ratio, and what
MBPP's 500 programs cost one at a time. (Child CPU time is not comparable: the sandboxed interpreter is reaped
inside bwrap's PID namespace, so its CPU time never reaches our RUSAGE_CHILDREN.)

    HF_ALLOW_CODE_EVAL=1 python scripts/bench_sandbox.py [--runs 50]
"""

import argparse
import os
import statistics
import time

from llada_xdlm.evaluation.code_exec import NO_SANDBOX_ENV, check_code_eval_allowed, run_program

PROGRAM = """
def similar_elements(test_tup1, test_tup2):
    return tuple(set(test_tup1) & set(test_tup2))

assert similar_elements((3, 4, 5, 6), (5, 7, 4, 10)) == (4, 5)
assert similar_elements((1, 2, 3, 4), (5, 4, 3, 7)) == (3, 4)
assert similar_elements((11, 12, 14, 13), (17, 15, 14, 13)) == (13, 14)
"""


def timed_run(sandboxed: bool) -> float:
    """Wall seconds of one run_program call in the given mode."""
    if sandboxed:
        os.environ.pop(NO_SANDBOX_ENV, None)
    else:
        os.environ[NO_SANDBOX_ENV] = "1"
    start = time.perf_counter()
    result = run_program(PROGRAM)
    wall = time.perf_counter() - start
    assert result.passed, result.stderr
    return wall


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=50, help="programs per mode")
    args = p.parse_args()
    check_code_eval_allowed()  # finds a working bwrap (once per process) before anything is timed
    timed_run(True), timed_run(False)  # warm-up: page cache, the unsandboxed warning
    times = {True: [], False: []}
    for _ in range(args.runs):
        for sandboxed in (True, False):
            times[sandboxed].append(timed_run(sandboxed))
    base, wall = statistics.median(times[False]), statistics.median(times[True])
    for name, seconds in (("plain subprocess", base), ("sandbox (bwrap)", wall)):
        print(f"{name:17s} {seconds * 1e3:7.1f} ms per program "
              f"(MBPP's 500 programs one at a time: {500 * seconds:5.1f} s)")
    print(f"sandbox / plain: x{wall / base:.2f} (+{(wall - base) * 1e3:.1f} ms per program; "
          f"medians of {args.runs} runs each)")


if __name__ == "__main__":
    main()
