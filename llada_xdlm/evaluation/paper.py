"""The XDLM paper's evaluation protocol: prompts, stop words and scoring of its five benchmarks, row by row.

The authors score LLaDA with their fork of OpenCompass (MzeroMiko/LLaDA-XDLM): a base model without a meta
template, so a dataset config's turns are filled from the row and joined by newlines; the generated span is
decoded with special tokens skipped and cut at the model's first stop word; then the dataset's own answer
extraction and metric. This module reproduces that for one row at a time on the Hugging Face copies of the
datasets, so that lm-eval (the tasks in eval/paper/) gives scores comparable with the paper's:

    task             dataset, config, split                         stop words   scored
    paper_mbpp       google-research-datasets/mbpp, full, test      [DONE]       the extracted program passes
    paper_gsm8k      openai/gsm8k, main, test                       none         the extracted number
    paper_humaneval  openai/openai_humaneval, test                  none         the indented body passes
    paper_math       EleutherAI/hendrycks_math, 7 subjects, test    Problem:     math-verify equivalence
    paper_bbh_<sub>  SaylorTwift/bbh, <sub>, test                   none         the extracted answer matches

OpenCompass behaviour that changes scores is reproduced even where it looks unintended, so the numbers stay
comparable; each such place says "OpenCompass quirk".
"""

import functools
import hashlib
import itertools
import os
import re

import regex
import yaml

from .code_exec import run_program
from .paper_shots import GSM8K_SHOTS, MATH_SHOTS, MBPP_SHOTS

PAPER_TASKS = ("paper_mbpp", "paper_gsm8k", "paper_humaneval", "paper_math", "paper_bbh")

# BBH's 27 subtasks in the authors' order; the multiple-choice ones score the option letter, the rest the text.
BBH_MULTIPLE_CHOICE = (
    "temporal_sequences", "disambiguation_qa", "date_understanding", "tracking_shuffled_objects_three_objects",
    "penguins_in_a_table", "geometric_shapes", "snarks", "ruin_names", "tracking_shuffled_objects_seven_objects",
    "tracking_shuffled_objects_five_objects", "logical_deduction_three_objects", "hyperbaton",
    "logical_deduction_five_objects", "logical_deduction_seven_objects", "movie_recommendation",
    "salient_translation_error_detection", "reasoning_about_colored_objects",
)  # fmt: skip
BBH_FREE_FORM = (
    "multistep_arithmetic_two", "navigate", "dyck_languages", "word_sorting", "sports_understanding",
    "boolean_expressions", "object_counting", "formal_fallacies", "causal_judgement", "web_of_lies",
)  # fmt: skip
BBH_SUBTASKS = BBH_MULTIPLE_CHOICE + BBH_FREE_FORM

# The authors set stop words on the model, per benchmark: only their MBPP and MATH configs have one.
STOP_WORDS = {
    "paper_mbpp": ("[DONE]",),
    "paper_gsm8k": (),
    "paper_humaneval": (),
    "paper_math": ("Problem:",),
    "paper_bbh": (),
}

# Per benchmark: the columns of OpenCompass's copy of the dataset in its loader's order (the Hugging Face rows
# hold the same values), and the column it scores against, which is blanked before a prompt is filled.
_COLUMNS = {
    "paper_mbpp": (("text", "code", "task_id", "test_setup_code", "test_list", "challenge_test_list"), "test_list_2"),
    "paper_gsm8k": (("question", "answer"), "answer"),
    "paper_humaneval": (("task_id", "prompt", "canonical_solution", "test", "entry_point"), "task_id"),
    "paper_math": (("problem", "solution"), "solution"),
    "paper_bbh": (("input", "target"), "target"),
}

# sha256 of the BBH exemplar texts the authors' prompts hold (OpenCompass's bbh/lib_prompt/<subtask>.txt).
_BBH_FEWSHOT_SHA256 = {
    "boolean_expressions": "84d89ef2ebf255217e5b4b195bbdb5bc4847efff65ca9674aad0d156b6818318",
    "causal_judgement": "b76a33493a1da78a766626e0921a00a2684116d7f691e462a2e9bd405f44e529",
    "date_understanding": "ec60ecb5998c5e396e71de91b0de56cd088b8a3fd50122c71c4c7798c3f8c09f",
    "disambiguation_qa": "aa108ba978ed948df6e6d18205780b9ccf15fdb50aa545be0e8861ed4f813d26",
    "dyck_languages": "52dec948d978cd0a9eb83b757aaf8cae07717f690c6abd62f390e956a122e6f5",
    "formal_fallacies": "58daee21cb8ac0268dc073e3fb1b3a54ad51cf256ad890c40f4d8c69da433e5e",
    "geometric_shapes": "e219fdcdf28ca3b1eab833ec5aecb97c49e4b89b6c23d1ab7da6e8b2d30b40ba",
    "hyperbaton": "266bfd031bdfa606cbb22d0d73fdffc5c48bbb0a624fe3e8e15813ba4980d30f",
    "logical_deduction_five_objects": "2c8a9581185b0f5b79a21bf91465be425f7c92cb7898897e2295fe218e5cea68",
    "logical_deduction_seven_objects": "2c8a9581185b0f5b79a21bf91465be425f7c92cb7898897e2295fe218e5cea68",
    "logical_deduction_three_objects": "2c8a9581185b0f5b79a21bf91465be425f7c92cb7898897e2295fe218e5cea68",
    "movie_recommendation": "82430ef6ed36e54738442941790b45d7514370d6fd12cc5496b6f01837659597",
    "multistep_arithmetic_two": "83b6388b22747d01a65b22d85b0cdaaa5a666b2a50df1dac2b8f405ff60bdcd5",
    "navigate": "0c04ef97ca6a58e6e5c76eb44779ae0add6c604ac04afd1302f89a835519ad51",
    "object_counting": "a536307309edfb2ca91c9f6144bc83556d2132004f8315305fa7fa4d99c5ae2c",
    "penguins_in_a_table": "8ee12e67dee1069f2f81097f9a42a202c31d6dbe4cab16ad90c44a90a0efa297",
    "reasoning_about_colored_objects": "e4a2503c80dd08f93246693dae22831e54857d3b658721bc6887930e5ee1e890",
    "ruin_names": "3aa1204d5f34cdf1fc32edbf2199293cc294444a9558e152268eadec3dac531e",
    "salient_translation_error_detection": "9c13f5b5cb46b8bf2908162f1f704d5b79d046b47363b94535de5b586e87b3ae",
    "snarks": "41200ac2cece7f4f4d76b9853e3249095734cef00831a93ac513a1a5d8314ade",
    "sports_understanding": "be04f01eee26a3021e0ad69a0f6e1f4667ec694f95f651b5cf853a8b37281418",
    "temporal_sequences": "c597815135af9c04f78cbf1281026a882fdaf3615f61872012b6ba7eb22ebe50",
    "tracking_shuffled_objects_five_objects": "466b860c8cec8d636dd59964aa67ab2c78950163f364e4d510d720a2233b0198",
    "tracking_shuffled_objects_seven_objects": "466b860c8cec8d636dd59964aa67ab2c78950163f364e4d510d720a2233b0198",
    "tracking_shuffled_objects_three_objects": "466b860c8cec8d636dd59964aa67ab2c78950163f364e4d510d720a2233b0198",
    "web_of_lies": "68f58c5e0ea6760a2a31aa3c39cde372378e061d1150fa8ddda06fc5a5aff697",
    "word_sorting": "ba1451cfccb485f1c8f7aa25252f48537d9769f19c762aac3cf08e7b107584be",
}

# MBPPEvaluator's cascade: the first pattern that matches picks the program. Twelve [BEGIN]/[DONE] forms (brackets
# optional, the code quoted, half quoted or bare), then code fences, then a lone [BEGIN] or a quote before [DONE].
# Matched with the `regex` module, as OpenCompass does here (its \s differs from `re`'s on four control characters);
# the other benchmarks' patterns use `re`, as OpenCompass does there.
_MBPP_CODE_PATTERNS = [
    rf"{begin}\s*{quote}(.*){close}\s*{done}"
    for quote, close in (("'", "'"), ("'", ""), ("", ""))
    for done in (r"\[DONE\]", "DONE")
    for begin in (r"\[BEGIN\]", "BEGIN")
] + [
    r"```python\s*(.*)\s*```",
    r"```\s*(.*)\s*```",
    r"```python\s*(.*)\s*$",
    r"```\s*(.*)\s*$",
    r"(.*)\s*```.*",
    r"\[BEGIN\]\s*'(.*)",
    r"\[BEGIN\](.*)",
    r"'(.*)'\s*\[DONE\]",
]

# Runs a program as OpenCompass's MBPP and HumanEval evaluators do: exec() in a fresh namespace (so `__name__` is
# "builtins" and `if __name__ == "__main__":` blocks are skipped), stdin/stdout/stderr swapped for a write-only
# buffer whose reads raise. Any exception, SystemExit included, goes on to run_program, which counts it as a
# failure (and names it), as OpenCompass does; so does ending the process early (os._exit).
_EXEC_AS_OPENCOMPASS = '''\
import io, sys


class _WriteOnly(io.StringIO):
    def read(self, *args, **kwargs):
        raise OSError("reading stdin is disabled")

    readline = readlines = read

    def readable(self):
        return False


def _run(source):
    sys.stdin = sys.stdout = sys.stderr = _WriteOnly()
    try:
        exec(source, {})
    finally:  # so that the traceback of an exception is printed
        sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__


'''

# Execution time limits of the authors' evaluators, in seconds: MBPP 10 s less the 1 s it keeps for itself,
# HumanEval human-eval's 3 s.
_TIMEOUTS = {"paper_mbpp": 9.0, "paper_humaneval": 3.0}

# What became of a code generation (code_outcome): OpenCompass's MBPP categories pass / wrong_answer / timeout /
# failed, with "failed" split by the exception that ended the program (or the lack of a program).
CODE_OUTCOMES = ("passed", "wrong_answer", "runtime_error", "syntax_error", "timeout", "empty")
_OUTCOME_OF_ERROR = {"AssertionError": "wrong_answer", "SyntaxError": "syntax_error",
                     "IndentationError": "syntax_error", "TabError": "syntax_error"}


def _benchmark(task: str) -> str:
    """The benchmark a task belongs to: the task itself, or paper_bbh for a BBH subtask `paper_bbh_<subtask>`."""
    if task in STOP_WORDS and task != "paper_bbh":
        return task
    if task.startswith("paper_bbh_") and task.removeprefix("paper_bbh_") in BBH_SUBTASKS:
        return "paper_bbh"
    raise ValueError(
        f"Unknown paper task {task!r}: use one of {', '.join(PAPER_TASKS[:-1])}, or paper_bbh_<subtask> for a "
        f"subtask in BBH_SUBTASKS (paper_bbh is the group of those)."
    )


def stop_words(task: str) -> tuple[str, ...]:
    """The stop words the authors' model cuts its decoded text at for this task (lm-eval's `until`)."""
    if task == "paper_bbh":  # the group: its subtasks share them
        return STOP_WORDS[task]
    return STOP_WORDS[_benchmark(task)]


@functools.cache
def bbh_fewshot_text(subtask: str) -> str:
    """The chain-of-thought exemplars OpenCompass puts in a BBH subtask's prompt, rebuilt from lm-eval's copy.

    lm-eval ships the same three exemplars per subtask (tasks/bbh/cot_fewshot/<subtask>.yaml); laid out as the
    BBH release's prompt files they equal the authors' text byte for byte, which the stored hash checks.
    """
    import lm_eval

    if subtask not in _BBH_FEWSHOT_SHA256:
        raise ValueError(f"Unknown BBH subtask {subtask!r}: expected one of BBH_SUBTASKS.")
    path = os.path.join(os.path.dirname(lm_eval.__file__), "tasks", "bbh", "cot_fewshot", f"{subtask}.yaml")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"paper_bbh rebuilds its exemplars from lm-eval's BBH chain-of-thought tasks, but {path} is missing "
            f"(lm-eval {lm_eval.__version__}): install an lm-eval release that ships tasks/bbh/cot_fewshot."
        )
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    # The BBH prompt files put the answer on the line after "Let's think step by step.", except sports_understanding.
    after_cue = " " if subtask == "sports_understanding" else "\n"
    text = config["description"] + "\n\n".join(
        f"Q: {shot['input']}\nA: Let's think step by step.{after_cue}{shot['target']}"
        for shot in config["fewshot_config"]["samples"]
    )
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != _BBH_FEWSHOT_SHA256[subtask]:
        raise RuntimeError(
            f"The BBH exemplars rebuilt from {path} (lm-eval {lm_eval.__version__}) differ from the authors' prompt "
            f"for {subtask!r}, so paper_bbh prompts would not match the paper's: use lm-eval 0.4.13, whose copy "
            f"matches."
        )
    return text


def _check_columns(benchmark: str, doc: dict) -> None:
    columns, _ = _COLUMNS[benchmark]
    missing = [column for column in columns if column not in doc]
    if missing:
        raise ValueError(
            f"{benchmark} row lacks {missing}: it takes rows in the Hugging Face format with columns {list(columns)} "
            f"(see the table in llada_xdlm.evaluation.paper)."
        )


def _opencompass_row(benchmark: str, doc: dict) -> dict:
    """The row as OpenCompass fills a prompt from it: its loader's columns in order, the scored column blanked."""
    _check_columns(benchmark, doc)
    columns, scored = _COLUMNS[benchmark]
    row = {column: doc[column] for column in columns}
    if benchmark == "paper_mbpp":  # MBPPDataset joins the tests into one string, keeps the list as test_case
        row.update(test_list="\n".join(doc["test_list"]), test_case=doc["test_list"])
    row[scored] = ""
    return row


def _fill(template: str, row: dict) -> str:
    """OpenCompass's fill: each `{column}` replaced by the column's str(), column after column; other braces stay.

    OpenCompass quirk: it is plain replacement, not str.format, so `{{` stays doubled and a value that holds
    `{later_column}` is filled as well (a GSM8K question holding "{answer}" loses it).
    """
    for column, value in row.items():
        template = template.replace("{" + column + "}", str(value))
    return template


def _mbpp_task(text: str, tests: str) -> str:
    return (
        f"You are an expert Python programmer, and here is your task: {text} "
        f"Your code should pass these tests:\n\n {tests}"
    )


def _turns(task: str) -> list[str]:
    """The turns of the task's prompt template, few-shot turns first, with OpenCompass's `{column}` placeholders."""
    benchmark = _benchmark(task)
    if benchmark == "paper_mbpp":
        shots = [[_mbpp_task(text, tests), f"[BEGIN]\n '{code}' \n[DONE] \n\n "] for text, tests, code in MBPP_SHOTS]
        return [*itertools.chain(*shots), _mbpp_task("{text}", "{test_list}  \n"), "[BEGIN]\n"]
    if benchmark == "paper_gsm8k":
        shots = [[f"Question: {q}\nLet's think step by step\nAnswer:", a] for q, a in GSM8K_SHOTS]
        return [*itertools.chain(*shots), "Question: {question}\nLet's think step by step\nAnswer:"]
    if benchmark == "paper_humaneval":
        return ["{prompt}"]
    if benchmark == "paper_math":
        shots = [[f"Problem:\n{p}\nSolution:", s] for p, s in MATH_SHOTS]
        return [*itertools.chain(*shots), "Problem:\n{problem}\nSolution:\n"]
    hint = bbh_fewshot_text(task.removeprefix("paper_bbh_"))
    return [f"Follow the given examples and answer the question.\n{hint}\n\nQ: {{input}}\nA: Let's think step by step."]


def build_prompt(task: str, doc: dict) -> str:
    """The prompt the authors' OpenCompass gives the model for this row, byte for byte.

    With no meta template OpenCompass fills each turn and joins the non-empty ones with "\\n" (the few-shot
    answers included: a base model sees them as plain text), ending with the turn the model continues.
    """
    row = _opencompass_row(_benchmark(task), doc)
    prompt, separator = "", ""
    for turn in _turns(task):
        turn = _fill(turn, row)
        if turn:
            prompt += separator + turn
        separator = "\n"
    return prompt


def _cut_at_stop_word(task: str, text: str) -> str:
    """The decoded text up to the task's first stop word, as LLaDABaseModel.generate returns it."""
    for stop in stop_words(task):
        if stop in text:
            return text.split(stop)[0]
    return text


def _mbpp_program(text: str) -> str:
    """The program MBPPEvaluator runs for a generation: the first pattern's match, then quote and [DONE] trimming.

    OpenCompass quirk: a generation that misses [DONE] and writes on into a new "[BEGIN] 'code'" example is scored
    on that example's code.
    """
    for pattern in _MBPP_CODE_PATTERNS:
        match = regex.search(pattern, text, regex.DOTALL)
        if match:
            text = match.group(1)
            break
    text = text.split("```")[0]
    text = regex.split(r"'?\s*\[?DONE\]?", text)[0]
    text = text.replace("\\_", "_").strip()
    return text.removeprefix("'").removesuffix("'")


def _humaneval_body(text: str) -> str:
    """The completion humaneval_internal_v2_postprocess keeps: the indented lines up to the first unindented one."""
    if text.startswith("   ") and not text.startswith("    "):
        text = " " + text  # a three-space indent is taken for four
    text = text.split("\n\n\n")[0].split("\n```")[0]
    return "\n".join(itertools.takewhile(lambda line: not line or line[0] == " ", text.split("\n")))


def _gsm8k_answer(text: str) -> str:
    """The number gsm8k_postprocess_ extracts: after the first "The answer is", else the last one before "Question:".

    OpenCompass quirk: numbers are read without thousands separators, so "The answer is 1,250" gives "1" and a
    trailing "1,000" gives "000".
    """
    match = re.search(r"The Answer is[:\s]*(\-?\d+(?:\.\d+)?)", text, re.IGNORECASE)
    if match:
        return match.group(1)
    numbers = re.findall(r"\-?\d+\.\d+|\-?\d+", text.split("Question:")[0])
    return numbers[-1] if numbers else "NULL"


def _gsm8k_correct(answer: str, reference_solution: str) -> bool:
    """Gsm8kEvaluator: equal strings, or within 1e-6 of the integer after the solution's "#### " (commas dropped)."""
    reference = reference_solution.split("#### ")[1].replace(",", "")
    try:
        return answer == reference or abs(float(answer) - int(reference)) < 1e-6
    except ValueError:
        return False


def _math_verify():
    try:
        import latex2sympy2_extended
        import math_verify
    except ImportError as error:
        raise ImportError(
            "paper_math is scored with math-verify, as the authors' OpenCompass does: pip install math-verify==0.8.0"
        ) from error
    return math_verify, latex2sympy2_extended.NormalizationConfig


def _math_answer(text: str) -> list:
    """The prediction MATHVerifyEvaluator parses: the first LaTeX answer, \\boxed{} first, [sympy value, text]."""
    math_verify, normalization = _math_verify()
    # OpenCompass also passes equations=True, which math-verify 0.8.0 only logs as deprecated.
    config = math_verify.LatexExtractionConfig(
        normalization_config=normalization(
            nits=False, malformed_operators=False, basic_latex=True, equations=False, boxed="all", units=True
        ),
        boxed_match_priority=0,
        try_extract_without_anchor=False,
    )
    return math_verify.parse(text, extraction_config=[config], extraction_mode="first_match")


def _last_boxed(solution: str) -> str | None:
    """The content of a solution's last \\boxed{...}, as OpenCompass's MATHDataset reads the reference answer.

    OpenCompass quirk: a solution whose last box is not written `\\boxed{...}` (e.g. `\\boxed 5`) has no reference
    answer, and the string "None" is compared instead.
    """
    start = solution.rfind("\\boxed")
    if start < 0:
        return None
    depth = 0
    for end in range(start, len(solution)):
        depth += {"{": 1, "}": -1}.get(solution[end], 0)
        if solution[end] == "}" and depth == 0:
            box = solution[start : end + 1]
            return box[len("\\boxed{") : -1] if box.startswith("\\boxed{") else None
    return None


def _math_correct(text: str, solution: str) -> bool:
    """MATHVerifyEvaluator: the parsed prediction is math-verify-equivalent to the reference answer."""
    math_verify, _ = _math_verify()
    extraction = [math_verify.LatexExtractionConfig(), math_verify.ExprExtractionConfig()]
    reference = math_verify.parse(
        f"${_last_boxed(solution)}$", extraction_config=extraction, extraction_mode="first_match"
    )
    if not reference:  # OpenCompass counts a row whose reference does not parse as wrong
        return False
    # OpenCompass quirk: the prediction goes in verify()'s gold slot and the reference in its target slot.
    return bool(math_verify.verify(_math_answer(text), reference))


def _after_first_answer_is(text: str) -> str:
    """OpenCompass quirk (BBH): the text between the first "answer is " and the next one, or all of it if none."""
    parts = text.split("answer is ")
    return parts[1].strip() if len(parts) > 1 else text


def _bbh_choice(text: str) -> str:
    """bbh_mcq_postprocess: the first "(X)" letter, else the first capital letter, else the text.

    OpenCompass quirk: a reply without "(X)" is read as its first capital letter ("No idea" answers N).
    """
    text = _after_first_answer_is(text)
    match = re.search(r"\(([A-Z])", text) or re.search(r"([A-Z])", text)
    return match.group(1) if match else text


def _bbh_free_form(text: str) -> str:
    """bbh_freeform_postprocess: the first line of the answer, one final "." dropped, **bold** unwrapped."""
    text = _after_first_answer_is(text).split("\n")[0].strip()
    if text.endswith("."):
        text = text[:-1].strip()
    match = re.search(r"\*\*(.*?)\*\*", text)
    return match.group(1) if match else text


def postprocess(task: str, text: str) -> str:
    """What OpenCompass scores for a generation (the decoded span, special tokens skipped, nothing cut yet).

    MBPP: the program it runs before the tests; HumanEval: the body it appends to the prompt; GSM8K: the number;
    MATH: the LaTeX answer math-verify extracts ("" if none); BBH: the option letter or the answer text.
    """
    benchmark = _benchmark(task)
    text = _cut_at_stop_word(task, text)
    if benchmark == "paper_mbpp":
        return _mbpp_program(text)
    if benchmark == "paper_humaneval":
        return _humaneval_body(text)
    if benchmark == "paper_gsm8k":
        return _gsm8k_answer(text)
    if benchmark == "paper_math":
        answer = _math_answer(text)
        return answer[-1] if answer else ""
    if task.removeprefix("paper_bbh_") in BBH_MULTIPLE_CHOICE:
        return _bbh_choice(text)
    return _bbh_free_form(text)


def code_outcome(task: str, doc: dict, text: str) -> str:
    """What became of an MBPP or HumanEval generation, one of CODE_OUTCOMES: "passed" (the row's tests ran to their
    end), else "empty" (no code extracted), "syntax_error", "wrong_answer" (an assertion failed), "timeout", or
    "runtime_error" (any other exception, SystemExit included, or the process ending early). The program runs as
    OpenCompass runs it (an empty one too, as there), in the sandbox (only with HF_ALLOW_CODE_EVAL=1).

    OpenCompass quirk (MBPP): the program gets the row's tests but not its test_setup_code.
    """
    benchmark = _benchmark(task)
    if benchmark not in _TIMEOUTS:
        raise ValueError(f"{task} runs no program: code_outcome takes paper_mbpp or paper_humaneval.")
    _check_columns(benchmark, doc)
    answer = postprocess(task, text)
    if benchmark == "paper_mbpp":
        program = answer + "\n" + "\n".join(doc["test_list"])
    else:
        program = doc["prompt"] + answer + "\n" + doc["test"] + "\n" + f"check({doc['entry_point']})"
    result = run_program(_EXEC_AS_OPENCOMPASS + f"_run({program!r})\n", timeout=_TIMEOUTS[benchmark])
    if result.passed:
        return "passed"
    if not answer.strip():
        return "empty"
    if result.status == "timeout":
        return "timeout"
    return _OUTCOME_OF_ERROR.get(result.error, "runtime_error")


def score(task: str, doc: dict, text: str) -> float:
    """The row's score as OpenCompass computes it, 1.0 or 0.0, for a generation (decoded span, nothing cut yet).

    MBPP and HumanEval run the program (code_outcome; only with HF_ALLOW_CODE_EVAL=1).
    """
    benchmark = _benchmark(task)
    _check_columns(benchmark, doc)
    if benchmark in _TIMEOUTS:
        return float(code_outcome(task, doc, text) == "passed")
    if benchmark == "paper_math":
        return float(_math_correct(_cut_at_stop_word(task, text), doc["solution"]))
    answer = postprocess(task, text)
    if benchmark == "paper_gsm8k":
        correct = _gsm8k_correct(answer, doc["answer"])
    elif task.removeprefix("paper_bbh_") in BBH_MULTIPLE_CHOICE:
        correct = answer == _bbh_choice(doc["target"])
    else:
        correct = answer == doc["target"]
    return float(correct)
