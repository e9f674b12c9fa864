"""pass@1: the opt-in gate, the offline metric module and the paper's MBPP task (the sandbox: test_sandbox.py)."""

from pathlib import Path

import evaluate
import pytest
from lm_eval.api.task import ConfigurableTask
from lm_eval.tasks._yaml_loader import load_yaml

from llada_xdlm.evaluation import PASS_AT_1_PATH
from llada_xdlm.evaluation.code_exec import run_program


@pytest.fixture
def allow_code(monkeypatch):
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")


def test_refuses_without_hf_allow_code_eval(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    marker = tmp_path / "ran"
    with pytest.raises(PermissionError, match="HF_ALLOW_CODE_EVAL=1.*--confirm_run_unsafe_code"):
        run_program(f"open({str(marker)!r}, 'w').write('x')")
    assert not marker.exists()


def test_pass_at_1_metric_module_loads_by_local_path_offline(allow_code, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(PASS_AT_1_PATH)
    references = ["assert add(2, 3) == 5", "assert add(2, 3) == 5", "assert add(2, 3) == 5"]
    predictions = ["def add(a, b):\n    return a + b", "def add(a, b):\n    return a - b", "while True: pass"]
    assert metric.compute(references=references, predictions=predictions, timeout=1.0)["pass@1"] == pytest.approx(1 / 3)


def test_metric_refuses_without_opt_in(monkeypatch):
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    metric = evaluate.load(PASS_AT_1_PATH)
    with pytest.raises(PermissionError, match="HF_ALLOW_CODE_EVAL"):
        metric.compute(references=["assert True"], predictions=["pass"])


def test_paper_mbpp_task_builds_the_3_shot_prompt_and_scores_pass_at_1(allow_code, monkeypatch):
    """eval/mbpp_xdlm.yaml with its Hub data swapped for the local MBPP-shaped fixture rows."""
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(repo / "tests" / "fixtures" / "eval_tasks"))
    import fixture_tasks

    config = load_yaml(str(repo / "eval" / "mbpp_xdlm.yaml"), resolve_func=True)
    config.pop("dataset_path"), config.pop("dataset_name")
    config["custom_dataset"] = lambda **_: fixture_tasks.load_local("mbpp_tiny")
    task = ConfigurableTask(config=config)
    task.build_all_requests(limit=1, rank=0, world_size=1)
    prompt, gen_kwargs = task.instances[0].args
    assert prompt.count("[DONE]") == 3 and prompt.endswith("assert add(-1, 1) == 0\n[BEGIN]\n")
    assert gen_kwargs["until"] == ["[DONE]"]
    reference = task.doc_to_target(task.test_docs()[0])
    pass_at_1 = config["metric_list"][0]["metric"]
    assert pass_at_1(references=[reference], predictions=["def add(a, b):\n    return a + b"]) == 1.0
    assert pass_at_1(references=[reference], predictions=["def add(a, b):\n    return a - b"]) == 0.0
