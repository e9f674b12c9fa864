"""pass@1 for code generation: the fraction of problems whose single generated program passes its tests.

An `evaluate` metric shipped inside llada-xdlm and loaded by local path, so it works offline:

    import evaluate
    from llada_xdlm.evaluation import PASS_AT_1_PATH
    metric = evaluate.load(PASS_AT_1_PATH)
    metric.compute(predictions=["def add(a, b):\\n    return a + b"], references=["assert add(2, 3) == 5"])
    # {'pass@1': 1.0}

Each program is `prediction + "\\n" + reference`, run by llada_xdlm.evaluation.code_exec.run_programs, each in its
own bubblewrap sandbox (no network, no view of our files, environment or processes, limited memory, CPU time,
processes and output). It refuses to run unless HF_ALLOW_CODE_EVAL=1, and unless the sandbox works on this machine
or XDLM_CODE_EVAL_NO_SANDBOX=1 asks for none.
"""

import datasets
import evaluate

from llada_xdlm.evaluation.code_exec import check_code_eval_allowed, run_programs

_DESCRIPTION = "pass@1 with one greedy program per problem, each executed in a sandbox."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of str, one generated program per problem.
    references: list of str, the test code for each problem (e.g. assert statements).
    timeout: seconds per program (default 10).
    memory_mb: address-space limit per program in MiB (default 1024).
    num_workers: programs run at once (default min(4, CPU count)).
Returns:
    {"pass@1": fraction of programs that run past their last line in time (ending early fails, even with status 0)}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PassAt1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, timeout=10.0, memory_mb=1024, num_workers=None):
        check_code_eval_allowed()
        programs = [f"{prediction}\n{reference}\n" for prediction, reference in zip(predictions, references)]
        results = run_programs(programs, timeout=timeout, memory_mb=memory_mb, num_workers=num_workers)
        return {"pass@1": sum(r.passed for r in results) / max(len(results), 1)}
