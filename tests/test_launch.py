"""`xdlm train` and a recipe's launcher: the accelerate command it re-starts under (printed, then run), no re-start
inside a launched process, an immediate error without GPUs, and the recipe handed to training without the key."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llada_xdlm import launch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_training import TINY_RECIPE  # noqa: E402

GPU_CONFIG = "recipes/accelerate/deepspeed_zero3.yaml"


@pytest.fixture
def not_launched(monkeypatch):
    for name in launch.LAUNCHED:
        monkeypatch.delenv(name, raising=False)


def write(path: Path, content: dict) -> str:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return str(path)


def cpu_config(tmp_path: Path) -> str:
    return write(tmp_path / "accelerate_cpu.yaml", dict(compute_environment="LOCAL_MACHINE", distributed_type="NO",
                                                         use_cpu=True, num_processes=1, mixed_precision="no"))


def test_the_launcher_comes_from_the_recipe_or_the_command_line(tmp_path):
    recipe = write(tmp_path / "r.yaml", {"accelerate_config": GPU_CONFIG, "max_steps": 3})
    assert launch.split_launcher([recipe, "--max_steps", "4"]) == (GPU_CONFIG, [recipe, "--max_steps", "4"])
    assert launch.split_launcher([recipe, "--accelerate_config", "x.yaml", "--seed", "1"]) == ("x.yaml",
                                                                                            [recipe, "--seed", "1"])
    assert launch.split_launcher([recipe, "--accelerate_config="]) == (None, [recipe])
    plain = write(tmp_path / "plain.yaml", {"max_steps": 3})
    assert launch.split_launcher([plain]) == (None, [plain])
    with pytest.raises(launch.UsageError, match="needs a value"):
        launch.split_launcher([recipe, "--accelerate_config"])


def test_a_gpu_launcher_runs_one_process_per_visible_gpu(tmp_path):
    command = launch.launch_command(GPU_CONFIG, ["recipes/llada_cpt.yaml", "--max_steps", "10"], gpus=4)
    assert command == ["accelerate", "launch", "--config_file", GPU_CONFIG, "--num_processes", "4",
                       "-m", "llada_xdlm.train", "recipes/llada_cpt.yaml", "--max_steps", "10"]
    cpu = cpu_config(tmp_path)  # a CPU config keeps its own process count, GPUs or not
    assert launch.launch_command(cpu, ["r.yaml"], gpus=0) == ["accelerate", "launch", "--config_file", cpu,
                                                             "-m", "llada_xdlm.train", "r.yaml"]


def test_a_launcher_that_cannot_run_here_is_refused_saying_what_to_run():
    with pytest.raises(launch.UsageError) as err:
        launch.launch_command(GPU_CONFIG, ["recipes/llada_cpt.yaml"], gpus=0)
    assert "no CUDA GPU" in str(err.value) and "xdlm train recipes/quickstart.yaml" in str(err.value)
    assert "--accelerate_config ''" in str(err.value)
    with pytest.raises(launch.UsageError, match="launch_slurm.sh"):
        launch.launch_command("recipes/accelerate/deepspeed_zero3_multinode.yaml", ["r.yaml"], gpus=8)
    with pytest.raises(launch.UsageError, match="does not exist"):
        launch.launch_command("recipes/accelerate/nope.yaml", ["r.yaml"], gpus=8)


def test_without_gpus_xdlm_train_stops_at_once_with_the_command_to_run(not_launched, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(os, "execv", lambda *a: pytest.fail(f"re-started without a GPU: {a}"))
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as stop:
        launch.main(["recipes/llada_cpt.yaml"])
    assert stop.value.code == 2
    assert "xdlm train: error: recipes/llada_cpt.yaml trains under" in capsys.readouterr().err


def test_with_gpus_xdlm_train_prints_the_accelerate_command_and_runs_it(not_launched, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    started = []

    def execv(path, args):  # the real one never returns: this process becomes the launcher
        started.append([path, *args[1:]])
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", execv)
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit):
        launch.main(["recipes/llada_cpt.yaml", "--max_steps", "10"])
    expected = ["accelerate", "launch", "--config_file", GPU_CONFIG, "--num_processes", "2", "-m", "llada_xdlm.train",
                "recipes/llada_cpt.yaml", "--max_steps", "10"]
    assert capsys.readouterr().out == shlex.join(expected) + "\n"
    assert started == [[sys.executable, "-m", "accelerate.commands.launch", *expected[2:]]]


@pytest.mark.parametrize("variable", launch.LAUNCHED)
def test_a_launched_process_trains_in_place_on_the_users_recipe(variable, not_launched,
                                                                                  monkeypatch, tmp_path):
    recipe = {"accelerate_config": GPU_CONFIG, **TINY_RECIPE, "output_dir": str(tmp_path / "out")}
    path = write(tmp_path / "launched.yaml", recipe)
    monkeypatch.setenv(variable, "0")
    monkeypatch.setattr(os, "execv", lambda *a: pytest.fail(f"re-started inside a launched process: {a}"))
    seen = {}

    def fake_train(argv):
        seen["argv"] = argv
        return {"train_loss": 1.0}

    monkeypatch.setattr("llada_xdlm.training.train.main", fake_train)
    assert launch.main([path, "--max_steps", "2"]) == {"train_loss": 1.0}
    # the recipe itself (training ignores the launcher key), so the run saves the recipe the user wrote
    assert seen["argv"] == [path, "--max_steps", "2"]
    assert yaml.safe_load(Path(path).read_text()) == recipe  # untouched


@pytest.mark.slow
def test_xdlm_train_restarts_under_its_launcher_and_trains(tmp_path):
    """The whole path in real processes (~25 s): `xdlm train` prints the accelerate command, accelerate starts
    `-m llada_xdlm.train`, which sees it was launched and trains (a one-process CPU config: no GPU here)."""
    recipe = write(tmp_path / "tiny.yaml", {"accelerate_config": cpu_config(tmp_path), **TINY_RECIPE,
                                            "max_steps": 2, "output_dir": str(tmp_path / "out")})
    env = {k: v for k, v in os.environ.items() if k not in launch.LAUNCHED}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-m", "llada_xdlm", "train", recipe], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    first, *rest = done.stdout.splitlines()
    assert first == f"accelerate launch --config_file {tmp_path / 'accelerate_cpu.yaml'} -m llada_xdlm.train {recipe}"
    assert any(line.startswith("train_loss: ") for line in rest)
    assert (tmp_path / "out" / "model.safetensors").is_file()
