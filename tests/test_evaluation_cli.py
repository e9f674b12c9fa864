"""Discovery: `lm_eval --model xdlm` from a real wheel install (start-up hook), and `xdlm-eval`, end to end."""

import glob
import json
import os
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest

import llada_xdlm_lm_eval_hook as hook

REPO = Path(__file__).resolve().parents[1]
FIXTURE_TASKS = REPO / "tests" / "fixtures" / "eval_tasks"
TASKS = "xdlm_fixture_gsm8k,xdlm_fixture_mbpp,xdlm_fixture_mc,xdlm_fixture_rolling"
MODEL_ARGS = "steps=4,gen_length=8,mc_num=4,batch_size=4,max_length=32,dtype=float32"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_ALLOW_CODE_EVAL": "1"}


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory) -> Path:
    """A fresh venv with our wheel installed (--no-deps); the dependencies come from this interpreter's
    site-packages as plain path entries, so only the wheel's own .pth files run there."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a clean copy: no stale build/ folder can leak into the wheel
    shutil.copytree(REPO / "llada_xdlm", source / "llada_xdlm", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "llada_xdlm_lm_eval_hook.py",
                 "llada_xdlm_lm_eval_hook.pth"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = glob.glob(str(tmp / "dist" / "llada_xdlm-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True)
    python = tmp / "venv" / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    wheel], check=True, capture_output=True)
    return python


def run_in(python, args, cwd, env_extra=None, **kwargs):
    env = {**os.environ, **OFFLINE, **(env_extra or {})}
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, **kwargs)


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["python", "/venv/bin/lm_eval", "run", "--model", "xdlm"], True),
        (["python", "/venv/bin/lm-eval", "--tasks", "gsm8k"], True),
        (["python", "-m", "lm_eval", "--model", "xdlm"], True),
        (["python", "-X", "importtime", "-mlm_eval"], True),
        (["python", "-m", "lm_eval.tasks"], False),
        (["python", "-c", "import lm_eval"], False),
        (["python", "/venv/bin/accelerate", "launch", "-m", "lm_eval"], False),
        (["python", "my_lm_eval_notes.py"], False),
        (["python"], False),
    ],
)
def test_is_lm_eval_program(argv, expected):
    assert hook.is_lm_eval_program(argv) is expected


def test_wheel_installs_the_startup_hook_at_site_packages_root(wheel_python):
    probe = "import llada_xdlm, llada_xdlm_lm_eval_hook as h, os, sys; print(llada_xdlm.__file__); print(h.__file__)"
    out = run_in(wheel_python, ["-c", probe], cwd=wheel_python.parent)
    assert out.returncode == 0, out.stderr
    package, module = out.stdout.split()
    venv = str(wheel_python.parents[1])
    assert package.startswith(venv) and module.startswith(venv)  # the wheel's copies, not the source tree
    assert (Path(module).parent / "llada_xdlm_lm_eval_hook.pth").is_file()


def test_startup_hook_imports_nothing_in_other_programs(wheel_python, tmp_path):
    probe = tmp_path / "probe.py"  # a file, so that the command line itself mentions nothing of ours
    probe.write_text("import json, sys\nprint(json.dumps(sorted(sys.modules)))\n")
    out = run_in(wheel_python, ["-X", "importtime", str(probe)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    modules = json.loads(out.stdout)
    assert not [m for m in modules if m.split(".")[0] in ("torch", "lm_eval", "llada_xdlm", "llada_xdlm_lm_eval_hook")]
    assert "llada" not in out.stderr and "torch" not in out.stderr  # -X importtime lists every import


def test_startup_hook_line_costs_microseconds():
    line = (REPO / "llada_xdlm_lm_eval_hook.pth").read_text().strip()
    code = compile(line, "pth", "exec")
    argv = ["/usr/bin/python3", "-m", "pytest", "tests/test_something.py", "-x", "-q"]
    namespace = {}
    saved, sys.orig_argv = sys.orig_argv, argv
    try:
        start = time.perf_counter()
        for _ in range(1000):
            exec(code, namespace)
        per_call = (time.perf_counter() - start) / 1000
    finally:
        sys.orig_argv = saved
    assert per_call < 100e-6, per_call  # an interpreter start-up takes ~10 ms


def test_lm_eval_program_gets_xdlm_lazily_and_keeps_builtin_models(wheel_python, tmp_path):
    script = tmp_path / "lm_eval"  # what the hook sees for the `lm_eval` console script
    script.write_text(
        "import json, sys\n"
        "from lm_eval.api.registry import model_registry\n"
        "print(json.dumps({'xdlm': str(model_registry._objs['xdlm']), 'names': sorted(model_registry.keys()),\n"
        "                  'torch': 'torch' in sys.modules}))\n"
    )
    out = run_in(wheel_python, [str(script)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["xdlm"] == "llada_xdlm.evaluation.lm_eval_model:XDLMEvalLM"  # a placeholder: nothing imported
    assert {"hf", "huggingface", "vllm", "dummy"} <= set(report["names"])
    assert report["torch"] is False


def test_editable_install_gets_the_startup_hook_too(tmp_path):
    """`pip install -e .` (the README's install) puts the hook's .pth beside setuptools' own, so the plain `lm_eval`
    knows xdlm there as well."""
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "build",
                                                                "outputs", "tests", "docs", "data"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    purelib = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                          "--no-build-isolation", "-q", "-e", str(source)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (purelib / "llada_xdlm_lm_eval_hook.pth").is_file()
    script = tmp_path / "lm_eval"  # what the hook sees for the `lm_eval` console script
    script.write_text("import llada_xdlm_lm_eval_hook as h\nfrom lm_eval.api.registry import model_registry\n"
                      "print(h.__file__, model_registry._objs['xdlm'])\n")
    out = run_in(python, [str(script)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    hook_file, target = out.stdout.split()
    assert hook_file.startswith(str(source)) and target == "llada_xdlm.evaluation.lm_eval_model:XDLMEvalLM"


def test_register_lm_eval_makes_xdlm_known_to_the_python_api_and_keeps_builtins():
    from lm_eval.api.registry import get_model, model_registry

    import llada_xdlm
    from llada_xdlm.evaluation.lm_eval_model import XDLMEvalLM

    model_registry._objs.pop("xdlm", None)  # as in a notebook where no start-up hook ran
    llada_xdlm.register_lm_eval()
    assert get_model("xdlm") is XDLMEvalLM
    assert {"hf", "vllm", "dummy"} <= set(model_registry.keys())


def fixture_results(output_path: Path) -> dict:
    """The results JSON lm-eval wrote, checked for every fixture task and metric."""
    (results_file,) = glob.glob(str(output_path / "**" / "results_*.json"), recursive=True)
    results = json.loads(Path(results_file).read_text())["results"]
    assert set(results) == set(TASKS.split(","))
    assert 0 <= results["xdlm_fixture_gsm8k"]["exact_match,flexible-extract"] <= 1
    assert 0 <= results["xdlm_fixture_mbpp"]["pass_at_1,none"] <= 1
    assert 0 <= results["xdlm_fixture_mc"]["acc,none"] <= 1
    assert results["xdlm_fixture_rolling"]["byte_perplexity,none"] > 1
    return results


def lm_eval_args(checkpoint, output_path, tasks=TASKS):
    return ["--model", "xdlm", "--model_args", f"pretrained={checkpoint},{MODEL_ARGS}", "--tasks", tasks,
            "--include_path", str(FIXTURE_TASKS), "--confirm_run_unsafe_code", "--output_path", str(output_path)]


@pytest.mark.slow
def test_plain_lm_eval_cli_from_wheel_runs_fixture_tasks(wheel_python, checkpoint, tmp_path):
    out = run_in(wheel_python, ["-m", "lm_eval", "run", *lm_eval_args(checkpoint, tmp_path / "out")], cwd=tmp_path,
                 timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    fixture_results(tmp_path / "out")


@pytest.mark.slow
def test_xdlm_eval_runs_fixture_tasks_and_two_processes_give_the_same_results(checkpoint, tmp_path):
    script = shutil.which("xdlm-eval", path=str(Path(sys.executable).parent))
    assert script, "xdlm-eval is not installed: pip install -e ."
    out = run_in(script, lm_eval_args(checkpoint, tmp_path / "one"), cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    single = fixture_results(tmp_path / "one")
    # data parallel on CPU (gloo): lm-eval shards the requests by rank; the Monte-Carlo draws are seeded per request
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "llada_xdlm.eval"]
    tasks = "xdlm_fixture_gsm8k,xdlm_fixture_mc,xdlm_fixture_rolling"  # one of each request type
    out = run_in(sys.executable, [*launch, *lm_eval_args(checkpoint, tmp_path / "two", tasks)], cwd=tmp_path,
                 timeout=600, env_extra={"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "on rank 1" in out.stderr
    (results_file,) = glob.glob(str(tmp_path / "two" / "**" / "results_*.json"), recursive=True)
    assert json.loads(Path(results_file).read_text())["results"] == {t: single[t] for t in tasks.split(",")}


PAPER_FIXTURE_TASKS = REPO / "tests" / "fixtures" / "paper_tasks"
PAPER_TASKS = {"paper_fixture_mbpp": "paper_mbpp", "paper_fixture_gsm8k": "paper_gsm8k",
               "paper_fixture_humaneval": "paper_humaneval", "paper_fixture_math_algebra": "paper_math",
               "paper_fixture_math_prealgebra": "paper_math",
               **{f"paper_fixture_bbh_{s}": f"paper_bbh_{s}"
                  for s in ("date_understanding", "boolean_expressions", "sports_understanding")}}


@pytest.mark.slow
def test_plain_lm_eval_runs_every_paper_task_in_paper_mode_with_the_protocols_prompts(wheel_python, tiny_config,
                                                                                      tiny_tokenizer, tmp_path,
                                                                                      monkeypatch):
    """`lm_eval --model xdlm` with mode=paper over the five paper benchmarks (fixture rows): every logged prompt is
    build_prompt's, every `until` the task's stop words, and every score the protocol's score of the logged answer."""
    from llada_xdlm import LLaDAModelLM
    from llada_xdlm.evaluation.paper import build_prompt, score, stop_words

    tiny_config.max_sequence_length = 4096  # few-shot prompts run to ~2k tokens of the tiny tokenizer
    checkpoint = tmp_path / "tiny-llada"
    LLaDAModelLM(tiny_config).save_pretrained(checkpoint)
    tiny_tokenizer.save_pretrained(checkpoint)
    args = ["--model", "xdlm", "--model_args", f"pretrained={checkpoint},mode=paper,steps=2,gen_length=16,"
            "k1=0.1,dtype=float32", "--tasks", "paper_fixture_mbpp,paper_fixture_gsm8k,paper_fixture_humaneval,"
            "paper_fixture_math,paper_fixture_bbh", "--include_path", str(PAPER_FIXTURE_TASKS),
            "--confirm_run_unsafe_code", "--log_samples", "--output_path", str(tmp_path / "out")]
    out = run_in(wheel_python, ["-m", "lm_eval", "run", *args], cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    (results_file,) = glob.glob(str(tmp_path / "out" / "**" / "results_*.json"), recursive=True)
    results = json.loads(Path(results_file).read_text())
    assert results["config"]["batch_size"] in (1, "1")  # the paper's batch size, lm-eval's default
    logged = {}
    for path in glob.glob(str(tmp_path / "out" / "**" / "samples_*.jsonl"), recursive=True):
        task = next(t for t in PAPER_TASKS if f"samples_{t}_" in Path(path).name)
        logged[task] = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert set(logged) == set(PAPER_TASKS)
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")  # score() runs the code tasks' programs again here
    for fixture_task, task in PAPER_TASKS.items():
        for sample in logged[fixture_task]:
            prompt, gen_kwargs = sample["arguments"]["gen_args_0"]["arg_0"], sample["arguments"]["gen_args_0"]["arg_1"]
            assert prompt == build_prompt(task, sample["doc"])
            assert tuple(gen_kwargs["until"]) == stop_words(task)
            (metric,) = [k for k in sample if k in ("pass_at_1", "accuracy")]
            assert sample[metric] == score(task, sample["doc"], sample["resps"][0][0])
