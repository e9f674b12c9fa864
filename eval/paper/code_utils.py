"""Task helpers for the paper's MBPP and HumanEval tasks in this folder (lm-eval imports this file by path through
`!function code_utils.X`): the prompt and score of llada_xdlm.evaluation.paper, one row at a time.

Importing it refuses to go on unless HF_ALLOW_CODE_EVAL=1, so a code task stops before any generation.
"""

from llada_xdlm.evaluation.code_exec import check_code_eval_allowed
from llada_xdlm.evaluation.paper import CODE_OUTCOMES, build_prompt, code_outcome, score

check_code_eval_allowed()


def mbpp_prompt(doc: dict) -> str:
    return build_prompt("paper_mbpp", doc)


def mbpp_results(doc: dict, results: list[str]) -> dict:
    """pass@1, and for the failure breakdown a 1 under the row's outcome (code_outcome) and 0 under the others."""
    outcome = code_outcome("paper_mbpp", doc, results[0])
    return {"pass_at_1": float(outcome == "passed"), **{name: int(outcome == name) for name in CODE_OUTCOMES}}


def count(values: list[int]) -> int:
    """lm-eval aggregation of an outcome: the number of rows that had it."""
    return sum(values)


def humaneval_prompt(doc: dict) -> str:
    return build_prompt("paper_humaneval", doc)


def humaneval_results(doc: dict, results: list[str]) -> dict:
    return {"pass_at_1": score("paper_humaneval", doc, results[0])}
