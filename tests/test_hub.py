"""Staging a checkpoint for the Hub (`xdlm push`): remote code, tokenizer and a model card that says how to use it;
the staged folder loads without this package."""

import configparser
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from llada_xdlm import cli
from llada_xdlm.hub import CardFacts, stage_for_hub
from llada_xdlm.training.args import RECIPE_FILE
from llada_xdlm.training.train import main as train

REPO = Path(__file__).resolve().parents[1]


def test_push_dry_run_stages_a_loadable_folder_with_model_card(tiny_model, tiny_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_model.config.k1 = 0.1
    tiny_model.save_pretrained(tmp_path / "ckpt")
    tiny_tokenizer.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "staged"
    assert cli.main(["push", "--model", str(tmp_path / "ckpt"), "--repo", "me/tiny-xdlm", "--train_steps", "600",
                     "--dry_run", "--out", str(out)]) == 0

    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_llada.py", "modeling_llada.py", "README.md",
            "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((out / "config.json").read_text())
    assert config["k1"] == 0.1
    assert config["auto_map"]["AutoModel"] == config["auto_map"]["AutoModelForCausalLM"] == "modeling_llada.LLaDAModelLM"
    assert config["auto_map"]["AutoConfig"] == "configuration_llada.LLaDAConfig"
    card = (out / "README.md").read_text()
    assert "k1 = 0.1" in card and "600 optimizer steps" in card and "trust_remote_code=True" in card
    assert "steps=32" in card and "me/tiny-xdlm" in card
    tiny_model.save_pretrained(tmp_path / "after")  # staging saved remote code for its own folder only
    assert "auto_map" not in json.loads((tmp_path / "after" / "config.json").read_text())


def test_staged_folder_loads_with_trust_remote_code_without_the_package(tiny_model, tiny_tokenizer, tiny_config,
                                                                        tmp_path):
    tiny_model.save_pretrained(tmp_path / "ckpt")
    tiny_tokenizer.save_pretrained(tmp_path / "ckpt")
    stage_for_hub(str(tmp_path / "ckpt"), tmp_path / "model", "me/tiny-xdlm")
    ids = torch.randint(0, tiny_config.vocab_size, (2, 8))
    torch.save(ids, tmp_path / "ids.pt")
    with torch.no_grad():
        expected = tiny_model(ids).logits
    script = textwrap.dedent(f"""
        import sys
        sys.modules["llada_xdlm"] = None  # the package cannot be imported: only the shipped remote code may be used
        import torch
        from transformers import AutoModel, AutoTokenizer
        model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        tokenizer = AutoTokenizer.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
        assert tokenizer.mask_token_id == model.config.mask_token_id
        with torch.no_grad():
            torch.save(model(torch.load({str(tmp_path / "ids.pt")!r})).logits, {str(tmp_path / "out.pt")!r})
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, env=env, timeout=300)
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


CORPUS = REPO / "data" / "stdlib_docs"


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory):
    """A model trained from scratch by the real entry point: xdlm, k1 0.3, log-linear schedule, 3 steps, sampler
    defaults 8 steps x 16 tokens."""
    tmp = tmp_path_factory.mktemp("scratch")
    recipe = dict(
        model_config=dict(d_model=32, n_layers=1, n_heads=2, mlp_hidden_size=64, max_sequence_length=32),
        tokenizer_vocab_size=300, data_files=[str(CORPUS / "train.jsonl")], block_size=32, objective="xdlm",
        k1=0.3, schedule="loglinear", sampling=dict(steps=8, gen_length=16), use_cpu=True, max_steps=3, per_device_train_batch_size=2, save_strategy="no",
        report_to="none", disable_tqdm=True, output_dir=str(tmp / "run"),
    )
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    train([str(tmp / "recipe.yaml")])
    return tmp / "run"


def test_model_card_states_what_the_checkpoint_records(scratch_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["push", "--model", str(scratch_run), "--repo", "me/scratch", "--dry_run",
                     "--out", str(tmp_path / "staged")]) == 0
    card = (tmp_path / "staged" / "README.md").read_text()
    assert "trained from scratch" in card and "base_model:" not in card
    assert "Objective: XDLM" in card and "k1 = 0.3" in card and "Noise schedule: loglinear" in card
    assert "Data: train.jsonl (local files)" in card and "Sampler defaults (config.json `sampling`" in card
    assert "gen_length 16, steps 8" in card
    assert f"Training: 3 optimizer steps, {3 * 2 * 32} tokens" in card  # steps x batch x block_size
    assert "GSAI-ML" not in card and "fineweb" not in card and "MDLM (" not in card
    assert json.loads((tmp_path / "staged" / "config.json").read_text())["k1"] == 0.3


@pytest.mark.parametrize("flag, recorded", [(dict(k1=0.1), "k1 = 0.3"), (dict(objective="mdlm"), "objective = 'xdlm'"),
                                            (dict(base_model="GSAI-ML/LLaDA-8B-Base"), "base_model = trained from scratch"),
                                            (dict(steps=600), "steps = 3"),
                                            (dict(data="HuggingFaceFW/fineweb-edu"), "data = 'train.jsonl")])
def test_a_flag_that_contradicts_the_checkpoint_is_refused(scratch_run, tmp_path, flag, recorded):
    with pytest.raises(ValueError, match=f"contradicts the checkpoint, which records {recorded}"):
        stage_for_hub(str(scratch_run), tmp_path / "staged", "me/scratch", CardFacts(**flag))
    assert not (tmp_path / "staged").exists()  # refused before anything is written


def test_flags_fill_in_what_a_folder_without_records_lacks(tiny_model, tiny_tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path / "ckpt")  # as LLaDA-8B-Base's folder: no recipe, no trainer state, and a
    tiny_tokenizer.save_pretrained(tmp_path / "ckpt")  # config.json without the training settings
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    for key in ("objective", "k1", "schedule", "eps", "antithetic", "sampling"):
        config.pop(key, None)
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    stage_for_hub(str(tmp_path / "ckpt"), tmp_path / "staged", "me/other",
                  CardFacts(base_model="GSAI-ML/LLaDA-8B-Base", objective="mdlm", data="my corpus", steps=50))
    card = (tmp_path / "staged" / "README.md").read_text()
    assert "base_model: GSAI-ML/LLaDA-8B-Base" in card and "GSAI-ML/LLaDA-8B-Base continued-pretrained" in card
    assert "Objective: MDLM" in card and "Data: my corpus" in card and "Training: 50 optimizer steps" in card
    assert "Noise schedule: not recorded" in card


# ---- the staging folder ------------------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict:
    """Every entry under folder: relative path -> (bytes, mtime) for files, None for folders."""
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def saved_model(tiny_model, tiny_tokenizer, tmp_path) -> Path:
    """A checkpoint folder that also holds what must never reach the Hub: secrets and optimizer state."""
    folder = tmp_path / "work" / "ckpt"
    tiny_model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    (folder / ".env").write_text("HF_TOKEN=secret\n")
    (folder / "optimizer.pt").write_bytes(b"\0" * 1024)
    return folder


@pytest.mark.parametrize("case, message", [
    ("the model folder", "is the model folder itself"),
    ("inside the model folder", "lies inside the model folder"),
    ("containing the model folder", "contains the model folder"),
    ("a folder with files", "is not empty (2 entries: .env, dump.bin)"),
    ("a file", "is a file"),
])
def test_push_refuses_a_staging_folder_that_is_not_new_or_empty_before_writing(saved_model, tmp_path, capsys, case,
                                                                                 message):
    other = tmp_path / "other"
    other.mkdir()
    (other / ".env").write_text("AWS_SECRET=1\n")
    (other / "dump.bin").write_bytes(b"\1" * 4096)
    (tmp_path / "notes.txt").write_text("mine")
    out = {"the model folder": saved_model, "inside the model folder": saved_model / "staged",
           "containing the model folder": saved_model.parent, "a folder with files": other,
           "a file": tmp_path / "notes.txt"}[case]
    before = snapshot(tmp_path)

    with pytest.raises(SystemExit) as exit_:
        cli.main(["push", "--model", str(saved_model), "--repo", "me/tiny", "--dry_run", "--out", str(out)])

    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"xdlm push: error: the staging folder {out} {message}")
    assert error.endswith("give a new or empty folder outside the model folder.")
    assert snapshot(tmp_path) == before  # nothing written, nothing created, the model folder untouched


def test_stage_for_hub_refuses_a_folder_inside_the_model_folder(saved_model):
    before = snapshot(saved_model)
    with pytest.raises(ValueError, match="lies inside the model folder"):
        stage_for_hub(str(saved_model), saved_model / "staged", "me/tiny")
    assert snapshot(saved_model) == before


def test_push_stages_into_an_existing_empty_folder_only_what_the_hub_needs(saved_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = snapshot(saved_model)
    (tmp_path / "staged").mkdir()
    assert cli.main(["push", "--model", str(saved_model), "--repo", "me/tiny", "--dry_run",
                     "--out", str(tmp_path / "staged")]) == 0
    names = {p.name for p in (tmp_path / "staged").iterdir()}
    assert "README.md" in names and "model.safetensors" in names
    assert not names & {".env", "optimizer.pt"}
    assert snapshot(saved_model) == before


# ---- what the model card says ------------------------------------------------------------------------------------


def test_model_card_takes_the_trained_settings_from_config_json_not_the_recipe(tiny_model, tiny_tokenizer, tmp_path):
    """config.json is what the model records (sampling and evaluation read it); a recipe.yaml that says otherwise
    (for example a later run's edited copy) must not change the card."""
    tiny_model.config.update(dict(objective="xdlm", k1=0.1, schedule="linear"))
    tiny_model.save_pretrained(tmp_path / "ckpt")
    tiny_tokenizer.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / RECIPE_FILE).write_text(yaml.safe_dump(dict(objective="udlm", k1=0.5, schedule="loglinear")))
    stage_for_hub(str(tmp_path / "ckpt"), tmp_path / "staged", "me/tiny")
    card = (tmp_path / "staged" / "README.md").read_text()
    assert "Objective: XDLM" in card and "k1 = 0.1 " in card and "Noise schedule: linear" in card
    assert "UDLM (" not in card and "0.5" not in card and "loglinear" not in card
    assert json.loads((tmp_path / "staged" / "config.json").read_text())["k1"] == 0.1


@pytest.mark.parametrize("base", ["local folder", "/nowhere/LLaDA-8B-Base", "../models/llada", "GSAI-ML/LLaDA-8B-Base"])
def test_model_card_base_model_header_names_hub_ids_only(tiny_model, tiny_tokenizer, tmp_path, base):
    if base == "local folder":
        base = str(tmp_path / "base")
        (tmp_path / "base").mkdir()
    tiny_model.save_pretrained(tmp_path / "ckpt")
    tiny_tokenizer.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / RECIPE_FILE).write_text(yaml.safe_dump(dict(model_name_or_path=base)))
    stage_for_hub(str(tmp_path / "ckpt"), tmp_path / "staged", "me/tiny")
    card = (tmp_path / "staged" / "README.md").read_text()
    header = card.split("---")[1]
    if base == "GSAI-ML/LLaDA-8B-Base":
        assert "base_model: GSAI-ML/LLaDA-8B-Base\n" in header
    else:
        assert "base_model" not in header
    assert f"{base} continued-pretrained" in card  # the body still says what it was trained from


def card_blocks(card: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", card, re.S)


def test_model_card_sampling_example_runs_as_written_and_names_what_it_needs(tiny_model, tiny_tokenizer, tmp_path):
    """The card's Python runs as written once llada-xdlm is installed as the card says, and the install command is
    this package's (not on PyPI: from a checkout, as README's Install section does). Without the package only the
    Load block works: the sampling block's import fails, as the card warns."""
    tiny_model.save_pretrained(tmp_path / "ckpt")
    tiny_tokenizer.save_pretrained(tmp_path / "ckpt")
    stage_for_hub(str(tmp_path / "ckpt"), tmp_path / "staged", "me/tiny-xdlm")
    card = (tmp_path / "staged" / "README.md").read_text()
    sample_section = card.split("## Sample in 32 steps")[1].split("\n## ")[0]
    assert "not on PyPI" in sample_section and "llada-xdlm" in sample_section
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["metadata"]["name"] == "llada-xdlm"  # the distribution `pip install -e .` installs from a checkout
    install = card_blocks(sample_section, "bash")
    assert install == ["pip install torch && pip install -e .\n"]
    readme_install = card_blocks((REPO / "README.md").read_text().split("## Install")[1], "bash")[0]
    assert 'pip install -e ".' in readme_install and "pip install torch" in readme_install

    load, sample = (block.replace('"me/tiny-xdlm"', repr(str(tmp_path / "staged"))) for block in
                    card_blocks(card, "python"))
    assert "from llada_xdlm import generate" in sample
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", load + sample], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("[") and done.stdout.strip().endswith("]")  # the decoded completions
    blocked = 'import sys\nsys.modules["llada_xdlm"] = None\n'
    without = subprocess.run([sys.executable, "-c", blocked + load + 'print("loaded")\n' + sample], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
    assert "loaded" in without.stdout and "import of llada_xdlm halted" in without.stderr
