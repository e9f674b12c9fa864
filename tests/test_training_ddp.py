"""Training under plain DDP (no DeepSpeed) on CPU: two processes over gloo via torch.distributed.run and the real
entry point. The fused LM-head loss must train as the unfused one does, and a streamed dataset, whose batches
process 0 reads and hands out, must train as one process does on the same global batch."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from test_training import losses, write_recipe  # noqa: E402
from test_training_zero3 import REPO, env, recipe  # noqa: E402

from llada_xdlm.cli import UsageError  # noqa: E402
from llada_xdlm.training import train  # noqa: E402
from llada_xdlm.training.data import XDLMCollator  # noqa: E402
from llada_xdlm.training.training_args import XDLMTrainingArguments  # noqa: E402

NO_DEEPSPEED = dict(deepspeed=None, max_steps=3, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant",
                    max_grad_norm=1e9)


def launch(path: str, port: int, processes: int, **environ) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
               str(port), "tests/training_launch.py", path]
    return subprocess.Popen(command, cwd=REPO, env=env(port, **environ), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> None:
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-5000:]


def test_pretraining_batches_share_keys_and_shape_whatever_their_rows():
    """The loader of a streamed dataset concatenates the batches of all processes: a batch of full blocks and one
    of cut blocks must stack, so both are [B, block_size] with an attention_mask."""
    collate = XDLMCollator(pad_token_id=0, length=6)
    full = collate([{"input_ids": [1, 2, 3, 4, 5, 6]}, {"input_ids": [7, 8, 9, 10, 11, 12]}])
    cut = collate([{"input_ids": [1, 2]}, {"input_ids": [3, 4, 5]}])
    assert sorted(full) == sorted(cut) == ["attention_mask", "input_ids", "labels"]
    assert full["input_ids"].shape == cut["input_ids"].shape == (2, 6)
    assert cut["attention_mask"].tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]]
    assert cut["labels"].tolist() == [[1, 2, -100, -100, -100, -100], [3, 4, 5, -100, -100, -100]]
    assert bool(full["attention_mask"].all())
    with pytest.raises(ValueError, match=r"7 tokens, more than the collator's length=6"):
        collate([{"input_ids": list(range(7))}])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four runs at once (start-up dominates): two-process DDP with the fused and with the unfused loss; a streamed
    dataset of random-length rows, one row per process and step (so single batches differ in padding and length)
    over two processes, and two rows per step on one process; the last two with noise that depends only on each
    token (tests/training_launch.py), so both see the same noise."""
    tmp = tmp_path_factory.mktemp("ddp")
    streamed = dict(streaming=True, random_length_prob=0.5, **NO_DEEPSPEED)
    specs = {
        "fused": (dict(loss_implementation="fused", **NO_DEEPSPEED), 2, {}),
        "unfused": (dict(loss_implementation="unfused", **NO_DEEPSPEED), 2, {}),
        "streamed_two": (dict(per_device_train_batch_size=1, **streamed), 2, dict(XDLM_FIXED_NOISE="1")),
        "streamed_one": (dict(per_device_train_batch_size=2, **streamed), 1, dict(XDLM_FIXED_NOISE="1")),
    }
    procs = [launch(recipe(tmp, name, ddp_backend="gloo", **overrides), 29671 + i, processes, **environ)
             for i, (name, (overrides, processes, environ)) in enumerate(specs.items())]
    for proc in procs:
        finish(proc)
    return tmp


@pytest.mark.slow
def test_two_process_ddp_fused_loss_trains_as_the_unfused_loss(runs):
    """The fused head's weight gradient must reach DDP's all-reduce like every other parameter's; SGD at lr 0.5
    would move a head that missed it (or got it twice) far beyond the tolerance."""
    fused, unfused = losses(runs / "fused"), losses(runs / "unfused")
    assert sorted(fused) == [1, 2, 3]
    for step in fused:
        assert fused[step] == pytest.approx(unfused[step], rel=1e-4)
    a, b = load_file(runs / "fused" / "model.safetensors"), load_file(runs / "unfused" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_process_ddp_streaming_trains_as_one_process_on_the_same_global_batch(runs):
    two, one = losses(runs / "streamed_two"), losses(runs / "streamed_one")
    assert sorted(two) == [1, 2, 3]
    for step in two:
        assert two[step] == pytest.approx(one[step], rel=1e-5)
    a, b = load_file(runs / "streamed_two" / "model.safetensors"), load_file(runs / "streamed_one" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_streamed_sft_over_several_processes_is_refused_before_anything_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(XDLMTrainingArguments, "world_size", property(lambda self: 2))
    recipe = write_recipe(tmp_path, mode="sft", streaming=True, prompt_column="prompt", response_column="response")
    with pytest.raises(UsageError, match="streaming SFT data over 2 processes.*Set streaming: false"):
        train.main([recipe])
    assert list((tmp_path / "recipe").iterdir()) == []  # the run lock made the folder; nothing was written
