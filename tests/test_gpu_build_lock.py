"""`xdlm check-gpu`'s training section builds DeepSpeed's JIT op before its timed runs, and a build lock left by a
killed build (no process holds it open) stops it at once with the command that removes it. A fake extensions folder
stands in for torch's: nothing is built here."""

import os
import sys
import types

import pytest
import torch

from llada_xdlm import gpu_acceptance
from llada_xdlm.gpu_acceptance import CORPUS, TINY, Section, build_deepspeed_ops, stale_build_locks


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.fixture
def fake_build(monkeypatch):
    """DeepSpeed's build_shm_op replaced by a recorder (the real one would compile for minutes)."""
    calls = []
    monkeypatch.setitem(sys.modules, "deepspeed.comm.torch",
                        types.SimpleNamespace(build_shm_op=lambda: calls.append("build")))
    return calls


def test_a_lock_that_no_process_holds_is_stale_and_one_held_open_is_not(tmp_path):
    # TORCH_EXTENSIONS_DIR/<op>/lock and the default cache's <root>/<python>_<device>/<op>/lock
    killed = touch(tmp_path / "deepspeed_shm_comm" / "lock")
    killed_default = touch(tmp_path / "py311_cpu" / "fused_adam" / "lock")
    building = touch(tmp_path / "py311_cpu" / "cpu_adam" / "lock")
    touch(tmp_path / "py311_cpu" / "cpu_adam" / "cpu_adam.so")  # not a lock
    fd = os.open(building, os.O_RDONLY)  # a live builder keeps its lock open, as torch's FileBaton does
    try:
        assert stale_build_locks(tmp_path) == [killed, killed_default]
    finally:
        os.close(fd)
    assert stale_build_locks(tmp_path) == [killed, building, killed_default]  # sorted per depth
    assert stale_build_locks(tmp_path / "nothing_built_yet") == []


def test_a_stale_lock_stops_the_build_naming_the_command_that_removes_it(tmp_path, monkeypatch, fake_build):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    lock = touch(tmp_path / "extensions" / "deepspeed_shm_comm" / "lock")
    with pytest.raises(RuntimeError, match=rf"stale DeepSpeed build lock {lock} .* remove it: rm {lock}$"):
        build_deepspeed_ops()
    assert fake_build == []  # never waits on the lock
    lock.unlink()
    assert build_deepspeed_ops() >= 0 and fake_build == ["build"]


def test_the_training_section_builds_deepspeeds_op_before_its_first_timed_run(tmp_path, monkeypatch):
    order = []
    monkeypatch.setattr(gpu_acceptance, "build_deepspeed_ops", lambda: order.append("build") or 0.0)

    def first_run(name, *args):
        order.append(name)
        raise RuntimeError("stop before training")

    monkeypatch.setattr(gpu_acceptance, "train_once", first_run)
    with pytest.raises(RuntimeError, match="stop before training"):
        gpu_acceptance.check_training(Section(3, "training"), TINY, torch.device("cpu"), True, CORPUS, tmp_path)
    assert order == ["build", "zero3"]
