"""Runs and checkpoints are safe by default: recipe values are checked at parse time, an output_dir holding another
run (or locked by a live one) is refused, checkpoints are written under a temporary name with a manifest and renamed
when complete, resume takes the newest complete checkpoint and verifies it, refuses a changed recipe and does not
train a finished run again, a full disk keeps the last good checkpoint and model, a non-finite loss or gradient norm
stops the run, and a streaming run resumes from its saved data position without replaying it. Tiny runs through the
real entry point."""

import errno
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import Trainer, modeling_utils

from llada_xdlm.cli import UsageError
from llada_xdlm.training import checkpoints, train
from llada_xdlm.training.args import parse_recipe, recipe_changes
from llada_xdlm.training.data import XDLMCollator
from llada_xdlm.training.pretokenize import load_pretokenized, pretokenize
from llada_xdlm.training.trainer import XDLMTrainer
from llada_xdlm.training.training_args import XDLMTrainingArguments

sys.path.insert(0, str(Path(__file__).parent))
from test_training import CORPUS, TINY_RECIPE, losses, write_recipe  # noqa: E402


@pytest.fixture
def nothing_built(monkeypatch):
    """Fails the test if the run gets as far as loading data or building a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("data or model was built before the error")

    monkeypatch.setattr(train, "load_splits", refuse)
    monkeypatch.setattr(train, "load_model", refuse)


@pytest.fixture
def seen(monkeypatch):
    """Records what every run in the test computes: per training step the input ids and the logged loss, and the
    number of batches the collator assembled."""
    record = {"input_ids": [], "loss": [], "collated": 0}
    training_step, log, collate = XDLMTrainer.training_step, XDLMTrainer.log, XDLMCollator.__call__

    def spy_step(self, model, inputs, *args):
        record["input_ids"].append(inputs["input_ids"].clone())
        return training_step(self, model, inputs, *args)

    def spy_log(self, logs, *args):
        if "loss" in logs:
            record["loss"].append((self.state.global_step, logs["loss"]))
        return log(self, logs, *args)

    def spy_collate(self, examples):
        record["collated"] += 1
        return collate(self, examples)

    monkeypatch.setattr(XDLMTrainer, "training_step", spy_step)
    monkeypatch.setattr(XDLMTrainer, "log", spy_log)
    monkeypatch.setattr(XDLMCollator, "__call__", spy_collate)
    return record


def poison_loss(monkeypatch, at_call: int):
    """The `at_call`-th training loss (counting from 1) becomes NaN: a batch that breaks the numerics."""
    compute_loss, calls = XDLMTrainer.compute_loss, []

    def poisoned(self, model, inputs, *args, **kwargs):
        loss = compute_loss(self, model, inputs, *args, **kwargs)
        if model.training:
            calls.append(1)
            if len(calls) == at_call:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(XDLMTrainer, "compute_loss", poisoned)


def poison_gradient(monkeypatch, at_call: int):
    """After the `at_call`-th training backward one gradient entry becomes infinite; the loss stays finite."""
    training_step, calls = XDLMTrainer.training_step, []

    def poisoned(self, model, inputs, *args):
        loss = training_step(self, model, inputs, *args)
        calls.append(1)
        if len(calls) == at_call:
            next(p for p in model.parameters() if p.grad is not None).grad.view(-1)[0] = float("inf")
        return loss

    monkeypatch.setattr(XDLMTrainer, "training_step", poisoned)


SAVING = dict(max_steps=4, save_strategy="steps", save_steps=2)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 4-step run with checkpoint-2 and checkpoint-4 (copy it before changing anything)."""
    tmp = tmp_path_factory.mktemp("finished")
    train.main([write_recipe(tmp, "run", **SAVING)])
    return tmp / "run"


def copy_run(finished_run, tmp_path) -> Path:
    shutil.copytree(finished_run, tmp_path / "run")
    return tmp_path / "run"


# ---- recipe values: checked by type and range at parse time, naming the key and the recipe ---------------------


BAD_VALUES = {
    "k1_boolean": (dict(k1=True), r"k1=True \(bool\) is not a number or null"),
    "k1_list": (dict(k1=[0.1]), r"k1=\[0\.1\] \(list\) is not a number or null"),
    "block_size_boolean": (dict(block_size=True), r"block_size=True \(bool\) is not an integer"),
    "data_files_not_a_list": (dict(data_files="train.jsonl"), r"data_files='train.jsonl' \(str\) is not a list"),
    "unquoted_no": (dict(eval_strategy=False), r"eval_strategy=False \(bool\) .* quote the word"),
    "max_steps_zero": (dict(max_steps=0), r"max_steps=0: set max_steps >= 1"),
    "no_steps_no_epochs": (dict(max_steps=-1, num_train_epochs=0), r"num_train_epochs=0 with max_steps unset"),
    "negative_learning_rate": (dict(learning_rate=-1e-3), r"learning_rate=-0\.001 must be > 0"),
    "zero_learning_rate": (dict(learning_rate=0.0), r"learning_rate=0\.0 must be > 0"),
    "k1_above_one": (dict(k1=1.5), r"k1=1\.5 is outside \[0, 1\]"),
    "eps_zero": (dict(eps=0.0), r"eps=0\.0 is outside \(0, 1\)"),
    "zero_batch": (dict(per_device_train_batch_size=0), r"per_device_train_batch_size=0 must be >= 1"),
    "zero_accumulation": (dict(gradient_accumulation_steps=0), r"gradient_accumulation_steps=0 must be >= 1"),
    "negative_nonfinite_budget": (dict(max_nonfinite_steps=-1), r"max_nonfinite_steps=-1 must be >= 0"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_recipe_value_is_rejected_naming_key_and_recipe_before_anything_is_built(case, tmp_path, nothing_built):
    overrides, message = BAD_VALUES[case]
    recipe = write_recipe(tmp_path, **overrides)
    with pytest.raises(ValueError, match=rf"^Recipe '{recipe}': {message}"):
        train.main([recipe])


def test_bad_command_line_value_is_rejected_like_a_recipe_value(tmp_path):
    with pytest.raises(ValueError, match=r"Recipe '.*': learning_rate=-1\.0 must be > 0"):
        parse_recipe([write_recipe(tmp_path), "--learning_rate", "-1"])


@pytest.mark.parametrize("flag", ["true", "True"])
def test_resume_from_checkpoint_true_on_the_command_line_means_the_newest_checkpoint(tmp_path, flag):
    *_, training_args = parse_recipe([write_recipe(tmp_path), "--resume_from_checkpoint", flag])
    assert training_args.resume_from_checkpoint is True
    *_, training_args = parse_recipe([write_recipe(tmp_path), "--resume_from_checkpoint", "run/checkpoint-3"])
    assert training_args.resume_from_checkpoint == "run/checkpoint-3"


# ---- the output directory ---------------------------------------------------------------------------------------


def plant_other_run(output_dir: Path) -> dict[Path, bytes]:
    """Files as another run leaves them: final model + a checkpoint."""
    files = {output_dir / "model.safetensors": b"weights of the other run",
             output_dir / "checkpoint-6" / "model.safetensors": b"checkpoint of the other run"}
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def test_output_dir_holding_another_run_is_refused_and_left_untouched(tmp_path, nothing_built):
    files = plant_other_run(tmp_path / "recipe")
    recipe = write_recipe(tmp_path, save_total_limit=1)
    with pytest.raises(UsageError) as error:
        train.main([recipe])
    message = str(error.value)
    assert str(tmp_path / "recipe") in message
    assert "resume_from_checkpoint: true" in message and "overwrite_output_dir: true" in message
    assert all(path.read_bytes() == content for path, content in files.items())


def test_overwrite_output_dir_replaces_the_other_run_and_its_checkpoints(tmp_path):
    files = plant_other_run(tmp_path / "recipe")
    train.main([write_recipe(tmp_path, max_steps=1, overwrite_output_dir=True)])
    assert not (tmp_path / "recipe" / "checkpoint-6").exists()  # could otherwise be resumed as this run's
    assert (tmp_path / "recipe" / "model.safetensors").read_bytes() != files[tmp_path / "recipe" / "model.safetensors"]


# ---- checkpoints: temporary name, manifest, the newest complete one --------------------------------------------


class Killed(Exception):
    """Stands in for kill -9 in the middle of writing a checkpoint."""


def test_save_killed_midway_leaves_no_complete_looking_folder_and_resume_takes_the_last_complete_one(
    tmp_path, monkeypatch, seen, caplog
):
    save_optimizer = Trainer._save_optimizer_and_scheduler

    def dies_at_step_6(self, output_dir):
        if self.state.global_step == 6:  # model weights written, optimizer not yet
            raise Killed
        save_optimizer(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", dies_at_step_6)
    recipe = write_recipe(tmp_path, "run", max_steps=6, save_strategy="steps", save_steps=3)
    with pytest.raises(Killed):
        train.main([recipe])
    run = tmp_path / "run"
    assert not (run / "checkpoint-6").exists() and (run / "tmp-checkpoint-6").is_dir()
    checkpoints.verify_checkpoint(str(run / "checkpoint-3"))
    (run / "checkpoint-9").mkdir()  # a folder cut short some other way: a name but no manifest
    (run / "checkpoint-9" / "config.json").write_text("{}")
    killed_losses = dict(seen["loss"])

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", save_optimizer)
    seen["loss"].clear()
    with caplog.at_level(logging.INFO, logger="llada_xdlm.train"):
        train.main([recipe, "--resume_from_checkpoint", "true"])
    log = caplog.text
    assert f"skipped {run}/checkpoint-9: {run}/checkpoint-9 has no manifest.json" in log
    assert f"skipped {run}/tmp-checkpoint-6: an unfinished save" in log
    assert f"took {run}/checkpoint-3" in log
    assert dict(seen["loss"]) == {s: killed_losses[s] for s in (4, 5, 6)}  # continues exactly where step 3 left
    checkpoints.verify_checkpoint(str(run / "checkpoint-6"))  # the step-6 save now completed
    assert not (run / "tmp-checkpoint-6").exists()


def corrupt(path: Path, offset: int, length: int = 4096) -> None:
    """Overwrite `length` bytes with 0xFF in place: same size, different content."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * length)


def test_same_size_corruption_of_the_weights_is_named_on_resume(finished_run, tmp_path, nothing_built):
    run = copy_run(finished_run, tmp_path)
    weights = run / "checkpoint-4" / "model.safetensors"
    size = weights.stat().st_size
    corrupt(weights, offset=size // 2)
    assert weights.stat().st_size == size
    recipe = write_recipe(tmp_path, "run", **SAVING)
    with pytest.raises(checkpoints.CheckpointError, match=rf"{weights} does not match its checksum"):
        train.main([recipe, "--resume_from_checkpoint", str(run / "checkpoint-4")])


def test_truncated_optimizer_state_is_named_on_resume(finished_run, tmp_path, nothing_built):
    run = copy_run(finished_run, tmp_path)
    optimizer = run / "checkpoint-4" / "optimizer.pt"
    size = optimizer.stat().st_size
    os.truncate(optimizer, size - 100)
    recipe = write_recipe(tmp_path, "run", **SAVING)
    with pytest.raises(checkpoints.CheckpointError, match=rf"{optimizer} has {size - 100} bytes, manifest.json "
                                                          rf"records {size}: truncated"):
        train.main([recipe, "--resume_from_checkpoint", str(run / "checkpoint-4")])


def test_resume_true_skips_a_corrupted_newest_checkpoint_naming_the_file(finished_run, tmp_path, caplog):
    run = copy_run(finished_run, tmp_path)
    corrupt(run / "checkpoint-4" / "model.safetensors", offset=1000)
    with caplog.at_level(logging.INFO, logger="llada_xdlm.train"):
        chosen = checkpoints.resolve_resume(True, str(run))
    assert chosen == str(run / "checkpoint-2")
    assert f"skipped {run}/checkpoint-4: {run}/checkpoint-4/model.safetensors does not match" in caplog.text


def test_manifest_lists_every_file_with_size_and_checksum(finished_run):
    folder = finished_run / "checkpoint-4"
    manifest = json.loads((folder / "manifest.json").read_text())["files"]
    on_disk = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert sorted(manifest) == on_disk and "model.safetensors" in on_disk and "optimizer.pt" in on_disk
    import xxhash  # an independent digest of the whole file at once

    for name, entry in manifest.items():
        content = (folder / name).read_bytes()
        assert entry == {"size": len(content), "xxh3_128": xxhash.xxh3_128(content).hexdigest()}


def test_resume_true_without_any_complete_checkpoint_says_so(tmp_path, nothing_built):
    plant_other_run(tmp_path / "recipe")  # checkpoint-6 without a manifest
    with pytest.raises(checkpoints.CheckpointError, match=r"has no complete checkpoint.*\n  skipped .*checkpoint-6"):
        train.main([write_recipe(tmp_path, resume_from_checkpoint=True)])


# ---- non-finite loss or gradient norm -------------------------------------------------------------------------


def test_huge_learning_rate_stops_at_the_first_nonfinite_step(tmp_path):
    recipe = write_recipe(tmp_path, max_steps=6, learning_rate=1e30)
    with pytest.raises(FloatingPointError, match=r"^Step 2: the loss is not finite; .*started without a checkpoint"):
        train.main([recipe])
    assert not (tmp_path / "recipe" / "model.safetensors").exists()  # no NaN model saved


def test_infinite_gradient_norm_with_a_finite_loss_stops_the_run(tmp_path, monkeypatch):
    poison_gradient(monkeypatch, at_call=3)
    with pytest.raises(FloatingPointError, match=r"^Step 3: the gradient norm \(inf\) is not finite; stopping"):
        train.main([write_recipe(tmp_path, max_steps=4)])


def test_poisoned_batch_after_resume_stops_naming_step_and_checkpoint(finished_run, tmp_path, monkeypatch):
    run = copy_run(finished_run, tmp_path)
    poison_loss(monkeypatch, at_call=2)  # step 4 after resuming at step 2
    recipe = write_recipe(tmp_path, "run", **SAVING)
    message = rf"^Step 4: the loss is not finite; .*resumed from {run}/checkpoint-2"
    with pytest.raises(FloatingPointError, match=message):
        train.main([recipe, "--resume_from_checkpoint", str(run / "checkpoint-2")])


def test_max_nonfinite_steps_skips_exactly_that_update(tmp_path, monkeypatch, caplog):
    poison_loss(monkeypatch, at_call=2)
    recipe = write_recipe(tmp_path, max_steps=3, save_strategy="steps", save_steps=3, max_nonfinite_steps=1)
    with caplog.at_level(logging.WARNING, logger="llada_xdlm.train"):
        train.main([recipe])
    assert "Step 2: the loss is not finite; update skipped (1 of max_nonfinite_steps=1)" in caplog.text
    optimizer = torch.load(tmp_path / "recipe" / "checkpoint-3" / "optimizer.pt", weights_only=True)
    assert {float(state["step"]) for state in optimizer["state"].values()} == {2.0}  # AdamW counted 2 of 3 steps
    weights = load_file(tmp_path / "recipe" / "model.safetensors")
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())


# ---- streaming: resume from the saved data position --------------------------------------------------------------


def test_streaming_resume_continues_from_the_saved_position_without_replaying(tmp_path, seen):
    recipe = write_recipe(tmp_path, "run", streaming=True, max_steps=6, save_strategy="steps", save_steps=3,
                          random_length_prob=0.5)
    train.main([recipe])
    uninterrupted, full_losses = seen["input_ids"][3:], losses(tmp_path / "run")
    seen["input_ids"].clear()
    seen["collated"] = 0
    train.main([recipe, "--output_dir", str(tmp_path / "resumed"),
                "--resume_from_checkpoint", str(tmp_path / "run" / "checkpoint-3")])
    assert len(seen["input_ids"]) == 3
    assert all(torch.equal(a, b) for a, b in zip(seen["input_ids"], uninterrupted))
    resumed = losses(tmp_path / "resumed")
    assert [resumed[s] for s in (4, 5, 6)] == [full_losses[s] for s in (4, 5, 6)]
    # Replaying would assemble the 3 batches before the checkpoint again; the loader assembles the 3 it trains on
    # plus the one it reads ahead.
    assert seen["collated"] <= 4


# ---- pre-tokenised data ---------------------------------------------------------------------------------------------


def test_pretokenized_folder_holds_the_blocks_the_recipe_would_train_on(tmp_path):
    recipe = write_recipe(tmp_path, streaming=True, random_length_prob=0.5, pretokenized_dir=str(tmp_path / "blocks"),
                          eval_data_files=[str(CORPUS / "validation.jsonl")])
    model_args, data_args, _, training_args = parse_recipe([recipe])
    pretokenize(model_args, data_args, training_args.seed)
    tokenizer, saved_train, saved_eval = load_pretokenized(model_args, data_args, training_args.seed)
    data_args.pretokenized_dir = None
    _, live_train, live_eval = train.load_data(model_args, data_args, training_args.seed)
    assert saved_train["input_ids"] == [row["input_ids"] for row in live_train]  # streamed, on the fly
    assert saved_eval["input_ids"] == [row["input_ids"] for row in live_eval]
    assert len(saved_train) > 100 and any(len(ids) < 64 for ids in saved_train["input_ids"])

    metrics = train.main([recipe, "--max_steps", "2"])  # trains from the folder
    assert metrics["nelbo_after"] > 0
    with pytest.raises(ValueError, match=r"written with other settings \(block_size: folder 64, recipe 32\)"):
        train.main([recipe, "--block_size", "32", "--output_dir", str(tmp_path / "other")])


def test_missing_pretokenized_folder_says_which_command_writes_it(tmp_path):
    recipe = write_recipe(tmp_path, pretokenized_dir=str(tmp_path / "absent"))
    with pytest.raises(UsageError, match=r"run `xdlm pretokenize RECIPE.yaml` first"):
        train.main([recipe])


# ---- one run per output_dir: a lock held for the run's life ---------------------------------------------------------

HOLD_LOCK = ("import sys\nfrom llada_xdlm.training.checkpoints import run_lock\n"
             "with run_lock(sys.argv[1]):\n    print('locked', flush=True)\n    sys.stdin.read()")


def lock_holder(output_dir: Path) -> subprocess.Popen:
    """Another process that holds output_dir's run lock until its stdin closes."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(output_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    return holder


def test_a_second_run_into_a_locked_output_dir_stops_at_once_naming_the_folder_and_the_other_run(
    tmp_path, nothing_built
):
    holder = lock_holder(tmp_path / "recipe")
    try:
        with pytest.raises(checkpoints.OutputDirInUse) as error:
            train.main([write_recipe(tmp_path)])
        message = str(error.value)
        assert "\n" not in message
        assert f"output_dir '{tmp_path / 'recipe'}' is in use by another run (pid {holder.pid} on " in message
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert holder.returncode == 0
    assert not (tmp_path / "recipe" / checkpoints.LOCK_FILE).exists()  # removed when the holder ended


def test_a_killed_runs_lock_does_not_block_the_next_run(tmp_path):
    holder = lock_holder(tmp_path / "run")
    holder.kill()  # SIGKILL: no cleanup runs, the lock file stays behind
    holder.wait(timeout=30)
    assert (tmp_path / "run" / checkpoints.LOCK_FILE).exists()
    with checkpoints.run_lock(str(tmp_path / "run")):
        assert (tmp_path / "run" / checkpoints.LOCK_FILE).read_text().startswith(f"pid {os.getpid()} on ")
        other = subprocess.run([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "run")], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=60)
        assert other.returncode != 0 and f"in use by another run (pid {os.getpid()} on " in other.stderr


# ---- a finished run is not trained again ------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("resume", ["true", "checkpoint-4"])
def test_resuming_a_finished_run_says_so_and_changes_no_file(finished_run, tmp_path, nothing_built, capsys, resume):
    run = copy_run(finished_run, tmp_path)
    before = snapshot(run)
    resume_from = "true" if resume == "true" else str(run / resume)
    assert train.main([write_recipe(tmp_path, "run", **SAVING), "--resume_from_checkpoint", resume_from]) == {}
    where = run if resume == "true" else run / resume
    assert f"{where}: already finished at step 4 (max_steps 4): nothing to train" in capsys.readouterr().out
    assert snapshot(run) == before
    assert json.loads((run / "trainer_state.json").read_text())["global_step"] == 4


# ---- resume with a changed recipe -------------------------------------------------------------------------------


def test_resume_with_a_changed_recipe_is_refused_listing_each_change(finished_run, tmp_path, nothing_built):
    run = copy_run(finished_run, tmp_path)
    before = snapshot(run)
    recipe = write_recipe(tmp_path, "run", **SAVING)
    with pytest.raises(ValueError) as error:
        train.main([recipe, "--resume_from_checkpoint", str(run / "checkpoint-2"), "--k1", "0.5",
                    "--learning_rate", "5e-4"])
    message = str(error.value)
    assert "\n" not in message and f"{run}/checkpoint-2 was trained with another recipe" in message
    assert "k1 0.1 -> 0.5, learning_rate 0.001 -> 0.0005" in message
    assert "revert them, or train afresh into a new output_dir" in message
    assert snapshot(run) == before


def test_resume_with_another_model_size_is_refused_before_the_model_is_built(finished_run, tmp_path, nothing_built):
    run = copy_run(finished_run, tmp_path)
    bigger = {**TINY_RECIPE["model_config"], "d_model": 128}
    recipe = write_recipe(tmp_path, "run", **SAVING, model_config=bigger, resume_from_checkpoint=str(run / "checkpoint-2"))
    with pytest.raises(ValueError, match=r"another recipe .*: model_config \{.*'d_model': 64.*\} -> \{.*'d_model': 128"):
        train.main([recipe])


def test_recipes_that_train_the_same_way_compare_equal():
    """A YAML 1.1 string number, a k1 fixed by the objective and a model_config given as YAML text change nothing."""
    base = {**TINY_RECIPE, "output_dir": "run", "objective": "mdlm"}
    base.pop("k1")
    same = {**base, "learning_rate": "1e-3", "k1": 0.0,
            "model_config": "{d_model: 64, n_layers: 2, n_heads: 4, n_kv_heads: 4, mlp_hidden_size: 128, "
                            "max_sequence_length: 64}"}
    assert recipe_changes(base, same) == {}
    assert recipe_changes(base, {**same, "eps": 0.01}) == {"eps": (1e-3, 0.01)}


def test_resume_may_raise_max_steps_which_is_logged_and_noted_in_the_recipe(finished_run, tmp_path, caplog):
    run = copy_run(finished_run, tmp_path)
    recipe = write_recipe(tmp_path, "run", **SAVING)
    with caplog.at_level(logging.INFO, logger="llada_xdlm.train"):
        train.main([recipe, "--resume_from_checkpoint", "true", "--max_steps", "6"])
    assert f"Resume: changed since {run}/checkpoint-4: max_steps 4 -> 6" in caplog.text
    assert json.loads((run / "trainer_state.json").read_text())["global_step"] == 6
    saved = (run / "recipe.yaml").read_text()
    assert saved.startswith(f"# resumed at step 4 from {run}/checkpoint-4 with max_steps 4 -> 6; the steps before")
    assert yaml.safe_load(saved)["max_steps"] == 6 and (run / "checkpoint-6" / "recipe.yaml").read_text() == saved
    assert json.loads((run / "config.json").read_text())["k1"] == 0.1


# ---- damaged manifests are skipped like any damaged checkpoint ------------------------------------------------------


DAMAGED_MANIFESTS = {"truncated": None, "empty_object": b"{}", "no_files": b'{"files": {}}',
                     "not_json": b"\xff\xfe garbage", "entry_without_checksum": b'{"files": {"config.json": {}}}'}


@pytest.mark.parametrize("damage", list(DAMAGED_MANIFESTS))
def test_a_damaged_manifest_is_skipped_by_auto_resume_with_the_reason(finished_run, tmp_path, caplog, damage):
    run = copy_run(finished_run, tmp_path)
    manifest = run / "checkpoint-4" / "manifest.json"
    content = DAMAGED_MANIFESTS[damage]
    manifest.write_bytes(manifest.read_bytes()[:50] if content is None else content)
    with caplog.at_level(logging.INFO, logger="llada_xdlm.train"):
        assert checkpoints.resolve_resume(True, str(run)) == str(run / "checkpoint-2")
    assert f"skipped {run}/checkpoint-4: {manifest} is damaged (" in caplog.text
    with pytest.raises(checkpoints.CheckpointError, match=rf"^{manifest} is damaged"):
        checkpoints.resolve_resume(str(run / "checkpoint-4"), str(run))


# ---- a full disk keeps the last good checkpoint and model -----------------------------------------------------------


def no_space(path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def test_full_disk_during_a_checkpoint_save_is_named_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    save_optimizer = Trainer._save_optimizer_and_scheduler

    def disk_fills_at_step_4(self, output_dir):
        if self.state.global_step == 4:  # the weights are written, the optimizer state does not fit
            raise no_space(Path(output_dir) / "optimizer.pt")
        save_optimizer(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", disk_fills_at_step_4)
    with pytest.raises(checkpoints.DiskFullError) as error:
        train.main([write_recipe(tmp_path, "run", **SAVING)])
    run = tmp_path / "run"
    assert str(error.value).startswith(f"no space left on device at {run} while saving checkpoint-4: ")
    assert "\n" not in str(error.value) and error.value.errno == errno.ENOSPC
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-2"]  # the partial save is gone, nothing else added
    checkpoints.verify_checkpoint(str(run / "checkpoint-2"))


def test_full_disk_during_the_final_save_keeps_the_previous_model(finished_run, tmp_path, monkeypatch):
    run = copy_run(finished_run, tmp_path)
    before = {name: data for name, data in snapshot(run).items() if "/" not in name}  # the final model's files
    real_save = modeling_utils.safe_save_file

    def disk_fills_in_the_final_save(tensors, filename, *args, **kwargs):
        if "checkpoint-" not in str(filename):
            Path(filename).write_bytes(b"\0" * 1000)  # what a full disk leaves: a cut-off file
            raise no_space(filename)
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(modeling_utils, "safe_save_file", disk_fills_in_the_final_save)
    recipe = write_recipe(tmp_path, "run", **SAVING)
    with pytest.raises(checkpoints.DiskFullError, match=rf"^no space left on device at {run} while saving the final"):
        train.main([recipe, "--resume_from_checkpoint", "true", "--max_steps", "6"])
    after = {name: data for name, data in snapshot(run).items() if "/" not in name}
    assert after == before
    checkpoints.verify_checkpoint(str(run / "checkpoint-6"))
    assert not any(p.name.startswith("tmp-") for p in run.iterdir())


def test_torch_writer_failure_counts_as_a_full_disk_only_when_the_disk_is_full(tmp_path, monkeypatch):
    """torch.save on a full disk raises this RuntimeError (no errno); with space left it is some other failure."""
    error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=4096))
    assert checkpoints.out_of_space(error, str(tmp_path))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10 << 30))
    assert not checkpoints.out_of_space(error, str(tmp_path))
    assert checkpoints.out_of_space(RuntimeError("Error while serializing: I/O error: No space left on device "
                                                 "(os error 28)"), str(tmp_path))


# ---- plausible bugs the tests above would let through ---------------------------------------------------------------


def test_resume_true_compares_checkpoint_steps_as_numbers(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    (run / "checkpoint-2").rename(run / "checkpoint-9")
    (run / "checkpoint-4").rename(run / "checkpoint-10")
    assert checkpoints.resolve_resume(True, str(run)) == str(run / "checkpoint-10")


def test_a_save_that_dies_while_writing_its_manifest_leaves_no_checkpoint_folder(tmp_path, monkeypatch):
    staged = tmp_path / "tmp-checkpoint-3" / "checkpoint-3"
    staged.mkdir(parents=True)
    (staged / "model.safetensors").write_bytes(b"weights")

    def dies(folder):
        raise Killed

    monkeypatch.setattr(checkpoints, "write_manifest", dies)
    with pytest.raises(Killed):
        checkpoints.finish_checkpoint(str(staged), str(tmp_path / "checkpoint-3"))
    assert not (tmp_path / "checkpoint-3").exists()  # a checkpoint-N folder is only ever a complete one
    assert (staged / "model.safetensors").read_bytes() == b"weights"


def test_resuming_another_runs_checkpoint_into_a_third_runs_folder_is_refused(finished_run, tmp_path, nothing_built):
    files = plant_other_run(tmp_path / "third")
    recipe = write_recipe(tmp_path, "third", **SAVING)
    with pytest.raises(UsageError, match=rf"output_dir '{tmp_path / 'third'}' already holds another run's files"):
        train.main([recipe, "--resume_from_checkpoint", str(finished_run / "checkpoint-2")])
    assert all(path.read_bytes() == content for path, content in files.items())


def test_nan_loss_with_finite_gradients_stops_the_run(tmp_path, monkeypatch):
    compute_loss, get_grad_norm, norms = XDLMTrainer.compute_loss, XDLMTrainer._get_grad_norm, []

    def nan_valued_loss(self, model, inputs, *args, **kwargs):
        loss = compute_loss(self, model, inputs, *args, **kwargs)
        if model.training and self.state.global_step == 1:  # step 2: NaN value, the gradient of the real loss
            return loss + float("nan")
        return loss

    def spy_norm(self, model, grad_norm=None):
        with torch.no_grad():
            norms.append(float(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]).norm()))
        return get_grad_norm(self, model, grad_norm)

    monkeypatch.setattr(XDLMTrainer, "compute_loss", nan_valued_loss)
    monkeypatch.setattr(XDLMTrainer, "_get_grad_norm", spy_norm)
    with pytest.raises(FloatingPointError, match=r"^Step 2: the loss is not finite; stopping before the update"):
        train.main([write_recipe(tmp_path, max_steps=3)])
    assert len(norms) == 2 and all(math.isfinite(n) for n in norms)  # the gradients were finite


def test_each_process_resumes_from_its_own_data_position(tmp_path, seen, monkeypatch):
    """A checkpoint of a two-process streaming run holds one data position per process; each resumes from its own.
    Process 1 is played by this process with its index set to 1: its position is planted two steps further on."""
    streaming = dict(streaming=True, save_strategy="steps", save_steps=2)
    train.main([write_recipe(tmp_path, "run", max_steps=5, **streaming)])
    batches = seen["input_ids"][:]  # steps 1-5
    checkpoint = tmp_path / "two" / "checkpoint-2"
    shutil.copytree(tmp_path / "run" / "checkpoint-2", checkpoint)
    shutil.copy(tmp_path / "run" / "checkpoint-4" / "data_state_0.pt", checkpoint / "data_state_1.pt")
    checkpoints.write_manifest(str(checkpoint))

    def resume_as(process: int) -> torch.Tensor:
        seen["input_ids"].clear()
        monkeypatch.setattr(XDLMTrainingArguments, "process_index", property(lambda self: process))
        monkeypatch.setattr(XDLMTrainingArguments, "should_save", property(lambda self: True))
        train.main([write_recipe(tmp_path, f"rank{process}", max_steps=3, **streaming),
                    "--resume_from_checkpoint", str(checkpoint)])
        (first,) = seen["input_ids"]
        return first

    assert torch.equal(resume_as(0), batches[2])  # step 3
    assert torch.equal(resume_as(1), batches[4])  # step 5: process 1's own position


def test_resuming_a_run_whose_final_save_failed_completes_it_from_the_last_checkpoint(
    finished_run, tmp_path, nothing_built, capsys
):
    run = copy_run(finished_run, tmp_path)
    for path in run.iterdir():  # as a full disk during the final save leaves it: the checkpoints only
        if path.is_file():
            path.unlink()
    recipe = write_recipe(tmp_path, "run", **SAVING)
    assert train.main([recipe, "--resume_from_checkpoint", "true"]) == {}
    assert f"its final save was incomplete: {run} now holds the model of {run}/checkpoint-4" in capsys.readouterr().out
    final = snapshot(run)
    assert final["model.safetensors"] == final["checkpoint-4/model.safetensors"]
    assert final["recipe.yaml"] == final["checkpoint-4/recipe.yaml"] and "config.json" in final
    assert json.loads(final["trainer_state.json"])["global_step"] == 4
    assert "optimizer.pt" not in final and "manifest.json" not in final
    checkpoints.verify_checkpoint(str(run / "checkpoint-4"))  # the checkpoint is left as it was
    train.main([recipe, "--resume_from_checkpoint", "true"])
    assert "nothing to train, no file changed" in capsys.readouterr().out and snapshot(run) == final
