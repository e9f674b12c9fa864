"""pass@1 execution safety: opt-in gate, timeout, limits, temp dir, clean environment; the offline metric module."""

import os
import time
from pathlib import Path

import evaluate
import pytest
from lm_eval.api.task import ConfigurableTask
from lm_eval.tasks._yaml_loader import load_yaml

from llada_xdlm.evaluation import PASS_AT_1_PATH
from llada_xdlm.evaluation.code_exec import run_program, run_programs


@pytest.fixture
def allow_code(monkeypatch):
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")


def test_refuses_without_hf_allow_code_eval(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    marker = tmp_path / "ran"
    with pytest.raises(PermissionError, match="HF_ALLOW_CODE_EVAL=1.*--confirm_run_unsafe_code"):
        run_program(f"open({str(marker)!r}, 'w').write('x')")
    assert not marker.exists()


def test_correct_program_passes_wrong_fails(allow_code):
    solution = "def add(a, b):\n    return a + b\n"
    tests = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
    right, wrong, crash = run_programs(
        [solution + tests, "def add(a, b):\n    return a * b\n" + tests, "raise SystemExit(3)"]
    )
    assert right.passed and right.status == "passed"
    assert wrong.status == "failed" and "AssertionError" in wrong.stderr
    assert crash.status == "failed"


def test_infinite_loop_is_killed_by_the_timeout(allow_code):
    start = time.monotonic()
    result = run_program("while True:\n    pass\n", timeout=1.0)
    assert result.status == "timeout"
    assert time.monotonic() - start < 10


def test_memory_limit_stops_a_huge_allocation(allow_code):
    result = run_program("x = bytearray(8 * 1024 ** 3)\n", memory_mb=512)
    assert result.status == "failed" and "MemoryError" in result.stderr


def test_program_cannot_delete_or_overwrite_files_outside_its_temp_dir(allow_code, tmp_path):
    victim_dir = tmp_path / "keep"
    victim_dir.mkdir()
    victim = victim_dir / "important.txt"
    victim.write_text("precious")
    attacks = [
        f"import os\nos.remove({str(victim)!r})",
        f"import shutil\nshutil.rmtree({str(victim_dir)!r})",
        f"import pathlib\npathlib.Path({str(victim)!r}).unlink()",
        f"open({str(victim)!r}, 'w').write('gone')",
        f"import os\nos.rename({str(victim)!r}, {str(victim)!r} + '.bak')",
        f"import subprocess\nsubprocess.run(['rm', '-rf', {str(victim_dir)!r}])",
        f"import os\nos.system('rm -rf {victim_dir}')",
    ]
    results = run_programs(attacks)
    assert all(r.status == "failed" and "PermissionError" in r.stderr for r in results), results
    assert victim.read_text() == "precious"


def test_program_may_write_in_its_own_temp_dir_which_is_removed_afterwards(allow_code):
    program = "import os, sys\nopen('scratch.txt', 'w').write('x')\nsys.stderr.write(os.getcwd())"
    result = run_program(program)
    assert result.passed
    workdir = result.stderr.strip()
    assert os.path.basename(workdir).startswith("xdlm_exec_") and not os.path.exists(workdir)


def test_program_cannot_read_the_parent_environment_or_signal_it(allow_code, monkeypatch):
    monkeypatch.setenv("XDLM_TEST_SECRET", "s3cret-token")
    monkeypatch.setenv("HF_TOKEN", "hf_should_not_leak")
    looks = "import os\nassert 'XDLM_TEST_SECRET' not in os.environ and 'HF_TOKEN' not in os.environ\n"
    assert run_program(looks + "assert set(os.environ) <= {'PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_CTYPE'}").passed
    assert run_program("import sys\nassert sys.flags.isolated == 1").passed  # python -I: no PYTHON* variables
    kill = run_program("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    assert kill.status == "failed" and "PermissionError" in kill.stderr
    assert os.environ["XDLM_TEST_SECRET"] == "s3cret-token"  # we are alive and unchanged


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
