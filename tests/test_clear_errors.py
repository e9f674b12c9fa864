"""Bad input gets one line, `xdlm COMMAND: error: ...` with exit status 2, before any work: recipe values, recipes
that are not a mapping, data files (missing, not UTF-8, blank) and model paths that look local but are not there.
XDLM_DEBUG shows the traceback; an error that is not an input error (a bug) keeps its traceback."""

import sys
import time
import types
from pathlib import Path

import pytest
import yaml

from llada_xdlm import cli
from llada_xdlm.checkpoint import looks_local, resolve_model_path
from llada_xdlm.training.args import DataArguments
from llada_xdlm.training.data import load_raw

sys.path.insert(0, str(Path(__file__).parent))
from test_training import TINY_RECIPE  # noqa: E402


def error_line(capsys, argv: list[str], monkeypatch) -> str:
    """Run `xdlm ARGV` in this process with XDLM_DEBUG unset; it must exit 2 with no traceback and one error line
    (after at most argparse's usage line). Returns that line."""
    monkeypatch.delenv(cli.DEBUG_VARIABLE, raising=False)
    try:
        status = cli.main(argv)
    except SystemExit as stop:
        status = stop.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith("usage:")]
    assert len(lines) == 1, err
    return lines[0]


def write_recipe(tmp_path: Path, content) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return str(path)


def tiny_recipe(tmp_path: Path, **overrides) -> str:
    return write_recipe(tmp_path, {**TINY_RECIPE, "output_dir": str(tmp_path / "out"), **overrides})


# ---- recipe errors: one line, for the checks that already existed and the new ones ------------------------------

@pytest.mark.parametrize("overrides,flags,message", [
    (dict(lerning_rate=1e-3), [], "has unknown keys ['lerning_rate']: check their spelling"),
    ({}, ["--learning_rate", "-1"], "learning_rate=-1.0 must be > 0."),
    (dict(k1=1.5), [], "k1=1.5 is outside [0, 1]: 0 is pure masking (MDLM), 1 pure uniform (UDLM)."),
    ({}, ["--bf16", "true", "--use_cpu", "false"], "Your setup doesn't support bf16/gpu."),
    ({}, ["--lerning_rate", "1e-3"], "unknown options --lerning_rate 1e-3: check their spelling"),
    ({}, ["--learning_rate", "fast"], "argument --learning_rate/--learning-rate: invalid float value: 'fast'"),
])
def test_a_bad_recipe_value_is_one_error_line(overrides, flags, message, tmp_path, capsys, monkeypatch):
    import transformers.training_args

    # bf16 without a GPU is refused by TrainingArguments; make "no GPU" hold on a GPU machine too
    monkeypatch.setattr(transformers.training_args, "is_torch_bf16_gpu_available", lambda: False)
    recipe = tiny_recipe(tmp_path, **overrides)
    line = error_line(capsys, ["train", recipe, *flags], monkeypatch)
    assert line.startswith(f"xdlm train: error: Recipe {recipe!r}") and message in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content,message", [
    ("- learning_rate: 1.0e-3\n- k1: 0.1\n", "holds a list, not `key: value` lines"),
    ("42\n", "holds the single value 42, not `key: value` lines"),
    ("learning_rate 1.0e-3\n", "holds the single value 'learning_rate 1.0e-3', not `key: value` lines"),
    ("k1: [0.1\nseed: 0\n", "is not valid YAML: while parsing a flow sequence"),
])
def test_a_recipe_that_is_not_a_mapping_is_one_error_line(content, message, tmp_path, capsys, monkeypatch):
    recipe = write_recipe(tmp_path, content)
    line = error_line(capsys, ["train", recipe], monkeypatch)
    assert line.startswith(f"xdlm train: error: {recipe} ") and message in line


def test_xdlm_debug_shows_the_traceback_of_an_input_error(tmp_path, monkeypatch):
    monkeypatch.setenv(cli.DEBUG_VARIABLE, "1")
    with pytest.raises(cli.UsageError, match=r"k1=1.5 is outside \[0, 1\]"):
        cli.main(["train", tiny_recipe(tmp_path, k1=1.5)])


def test_only_usage_errors_become_one_line_a_bug_keeps_its_traceback(capsys, monkeypatch):
    """A command raising UsageError gets one line and status 2; any other exception, a ValueError included, is a bug
    and propagates with its traceback."""
    def fake_command(raised: Exception):
        def main(argv, prog):
            raise raised
        return types.SimpleNamespace(main=main)

    monkeypatch.delenv(cli.DEBUG_VARIABLE, raising=False)
    monkeypatch.setitem(cli.COMMANDS, "probe", ("probe_command", "a command for this test"))
    monkeypatch.setitem(sys.modules, "probe_command", fake_command(cli.UsageError("the value is wrong: fix it")))
    assert cli.main(["probe"]) == 2
    assert capsys.readouterr().err == "xdlm probe: error: the value is wrong: fix it\n"
    monkeypatch.setitem(sys.modules, "probe_command", fake_command(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["probe"])


# ---- data files: each fault named with its file (and line) before training starts -------------------------------

def load(files: list[str]):
    return load_raw(DataArguments(data_files=files), files, "train")


def test_a_data_file_with_bytes_that_are_not_utf8_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"first line\nsecond line\n\nfourth caf\xe9 line\nfifth\n")  # Latin-1 e-acute on line 4
    with pytest.raises(cli.UsageError, match=rf"data file {path}, line 4: byte 0xe9 is not UTF-8 text"):
        load([str(path)])


def test_the_line_of_a_bad_byte_is_counted_across_read_chunks(tmp_path, monkeypatch):
    from llada_xdlm.training import data

    monkeypatch.setattr(data, "READ_CHUNK", 7)  # many chunks, each completed to a whole line
    path = tmp_path / "corpus.jsonl"
    # valid 2- and 3-byte characters everywhere: a chunk cut inside one must not read as a bad byte
    lines = ['{"text": "row %d: café à 3 €"}'.encode() % i for i in range(1, 40)]
    lines[30] = b'{"text": "row \xff"}'  # line 31
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(cli.UsageError, match=rf"data file {path}, line 31: byte 0xff"):
        load([str(path)])


def test_data_files_of_only_blank_lines_are_refused(tmp_path):
    blank, empty = tmp_path / "blank.txt", tmp_path / "empty.txt"
    blank.write_text("\n  \n\t\n\n")
    empty.write_text("")
    with pytest.raises(cli.UsageError, match=r"The dataset is empty: the data files .* hold no text"):
        load([str(blank), str(empty)])
    text = tmp_path / "text.txt"
    text.write_text("\n\nOne line of prose.\n")
    assert load([str(blank), str(text)])[0]["text"] == ""  # one file with text is a dataset: `datasets` reads it


def test_a_missing_data_file_or_a_pattern_matching_none_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(cli.UsageError, match=r"data file data/my_sft.jsonl does not exist \(paths are relative to "
                                             rf"the folder you run in: {tmp_path}\)"):
        load(["data/my_sft.jsonl"])
    with pytest.raises(cli.UsageError, match=r"data file shards/\*.jsonl matches no file"):
        load(["shards/*.jsonl"])


def test_xdlm_train_with_a_missing_data_file_is_one_error_line(tmp_path, capsys, monkeypatch):
    recipe = tiny_recipe(tmp_path, data_files=[str(tmp_path / "nope.jsonl")])
    line = error_line(capsys, ["train", recipe], monkeypatch)
    assert line.startswith(f"xdlm train: error: data file {tmp_path / 'nope.jsonl'} does not exist")


# ---- model paths: a local-looking path that is not there fails at once -----------------------------------------

@pytest.mark.parametrize("path,local", [
    ("GSAI-ML/LLaDA-8B-Base", False), ("gpt2", False),  # Hub ids
    ("outputs/nope", True),  # its first component, outputs/, is a folder here
    ("/abs/model", True), ("./model", True), ("../model", True), ("~/model", True), ("runs/a/model", True),
])
def test_a_path_looks_local_when_it_cannot_be_a_hub_id_or_starts_in_a_local_folder(path, local, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    assert looks_local(path) is local


def test_resolve_model_path_refuses_a_missing_local_path_and_passes_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "run").mkdir(parents=True)
    (tmp_path / "weights.bin").write_bytes(b"")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_model_path("GSAI-ML/LLaDA-8B-Base") == "GSAI-ML/LLaDA-8B-Base"
    assert resolve_model_path("outputs/run") == "outputs/run"
    assert resolve_model_path("~/outputs/run") == str(tmp_path / "outputs" / "run")
    for path in ("outputs/nope", "/no/such/model", "~/nope", "./nope"):
        with pytest.raises(cli.UsageError, match=rf"^no model at {path} \(no such folder\): give a training run's"):
            resolve_model_path(path)
    with pytest.raises(cli.UsageError, match=r"^no model at ./weights.bin \(a file, not a model folder\)"):
        resolve_model_path("./weights.bin")


@pytest.mark.parametrize("argv", [
    ["sample", "--prompt", "The"],
    ["ppl", "--datasets", "x.txt"],
    ["gen-ppl", "--evaluator", "gpt2"],
    ["push", "--repo", "me/model", "--dry_run"],
    ["gen-ppl", "--evaluator", "outputs/nope", "--model", "outputs/run"],  # the evaluator, before any model loads
])
def test_every_command_that_loads_a_model_refuses_a_missing_local_path_at_once(argv, tmp_path, capsys,
                                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "run").mkdir(parents=True)  # exists, but holds no model: never loaded here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # should the check be missing, fail fast instead of retrying
    if "--model" not in argv:
        argv = [*argv, "--model", "outputs/nope"]
    start = time.perf_counter()
    line = error_line(capsys, argv, monkeypatch)
    assert line.startswith(f"xdlm {argv[0]}: error: no model at outputs/nope (no such folder)")
    assert time.perf_counter() - start < 5


def test_a_recipe_naming_a_missing_local_model_is_one_error_line(tmp_path, capsys, monkeypatch):
    recipe = tiny_recipe(tmp_path, model_config=None, model_name_or_path=str(tmp_path / "init"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = error_line(capsys, ["train", recipe], monkeypatch)
    assert line.startswith(f"xdlm train: error: no model at {tmp_path / 'init'} (no such folder)")


def test_a_check_after_the_data_is_read_is_one_error_line_too(tmp_path, capsys, monkeypatch):
    import datasets

    recipe = tiny_recipe(tmp_path, block_size=128)  # the tiny model holds 64 tokens
    datasets.disable_progress_bars()  # a first read of the data file (no cache yet) draws a progress bar on stderr
    try:
        line = error_line(capsys, ["train", recipe], monkeypatch)
    finally:
        datasets.enable_progress_bars()
    assert line == ("xdlm train: error: block_size=128 exceeds the model's max_sequence_length=64: lower block_size "
                    "in the recipe.")


# ---- the training run's own refusals and a full disk: one line too ----------------------------------------------

def test_an_output_dir_holding_another_run_is_one_error_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.safetensors").write_bytes(b"another run's weights")
    line = error_line(capsys, ["train", tiny_recipe(tmp_path)], monkeypatch)
    assert line.startswith("xdlm train: error: output_dir") and "already holds another run's files" in line
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == b"another run's weights"


def test_resuming_from_a_folder_that_is_no_checkpoint_is_one_error_line(tmp_path, capsys, monkeypatch):
    recipe = tiny_recipe(tmp_path)
    line = error_line(capsys, ["train", recipe, "--resume_from_checkpoint", str(tmp_path / "nope")], monkeypatch)
    assert line == f"xdlm train: error: resume_from_checkpoint={str(tmp_path / 'nope')!r} is not a directory."


def test_a_full_disk_is_one_error_line_and_other_os_errors_keep_their_traceback(capsys, monkeypatch):
    import errno

    def fails_with(error):
        def main(argv, prog):
            raise error
        monkeypatch.setattr(cli.importlib, "import_module", lambda name: types.SimpleNamespace(main=main))

    fails_with(OSError(errno.ENOSPC, "No space left on device", "/data/run"))
    assert error_line(capsys, ["sample"], monkeypatch) == \
        "xdlm sample: error: [Errno 28] No space left on device: '/data/run'"
    fails_with(OSError(errno.EACCES, "Permission denied", "/data/run"))
    with pytest.raises(PermissionError):
        cli.main(["sample"])
