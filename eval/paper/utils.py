"""Task helpers for the paper's GSM8K and MATH tasks in this folder (lm-eval imports this file by path through
`!function utils.X`): the prompt and score of llada_xdlm.evaluation.paper, one row at a time."""

from llada_xdlm.evaluation.paper import build_prompt, score


def gsm8k_prompt(doc: dict) -> str:
    return build_prompt("paper_gsm8k", doc)


def gsm8k_results(doc: dict, results: list[str]) -> dict:
    return {"accuracy": score("paper_gsm8k", doc, results[0])}


def math_prompt(doc: dict) -> str:
    return build_prompt("paper_math", doc)


def math_results(doc: dict, results: list[str]) -> dict:
    return {"accuracy": score("paper_math", doc, results[0])}
