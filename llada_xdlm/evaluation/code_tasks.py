"""Functions that lm-eval code-generation task YAMLs (MBPP, HumanEval) reference with `!function`.

pass@1 is scored by the `evaluate` metric shipped in llada_xdlm/evaluation/metrics/pass_at_1 and loaded by local
path, so it runs offline (lm-eval's built-in tasks load "code_eval" from the Hub). Programs run only when
HF_ALLOW_CODE_EVAL=1 and lm_eval is given --confirm_run_unsafe_code (the task YAMLs set `unsafe_code: true`).
"""

import functools

from llada_xdlm.evaluation import PASS_AT_1_PATH


@functools.cache
def _metric():
    import evaluate

    return evaluate.load(PASS_AT_1_PATH)


def pass_at_1(references: list[str], predictions: list[str] | list[list[str]]) -> float:
    """lm-eval metric (called per document): does the generated program pass the reference tests?"""
    predictions = [p[0] if isinstance(p, list) else p for p in predictions]  # one greedy sample per problem
    return _metric().compute(references=references, predictions=predictions)["pass@1"]


def mbpp_target(doc: dict) -> str:
    """The reference tests of an MBPP problem; for few-shot examples, the solution the prompt shows instead."""
    if doc.get("is_fewshot"):
        return doc["code"] + "\n[DONE]"
    return "\n".join([doc.get("test_setup_code") or "", *doc["test_list"]])


def humaneval_programs(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """lm-eval filter: a HumanEval completion continues the prompt, so the program is prompt + completion."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]
