"""Task helpers for the paper's BBH subtasks in this folder (lm-eval imports this file by path through
`!function utils.X`): the prompt and score of llada_xdlm.evaluation.paper, one row at a time.

lm-eval hands doc_to_text and process_results the row alone, so each subtask gets its own pair, `<subtask>_prompt`
and `<subtask>_results`, for its yaml to name.
"""

import functools

from llada_xdlm.evaluation.paper import BBH_SUBTASKS, build_prompt, score


def _results(task: str, doc: dict, results: list[str]) -> dict:
    return {"accuracy": score(task, doc, results[0])}


for _subtask in BBH_SUBTASKS:
    globals()[f"{_subtask}_prompt"] = functools.partial(build_prompt, f"paper_bbh_{_subtask}")
    globals()[f"{_subtask}_results"] = functools.partial(_results, f"paper_bbh_{_subtask}")
