"""Staging a checkpoint for the Hub: remote code, tokenizer and a model card that says how to use it."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_push_script_dry_run_stages_a_loadable_folder_with_model_card(tiny_model, tiny_tokenizer, tmp_path):
    tiny_model.config.k1 = 0.1
    tiny_model.save_pretrained(tmp_path / "ckpt")
    tiny_tokenizer.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "staged"
    cmd = [sys.executable, str(REPO / "scripts" / "push_to_hub.py"), "--model", str(tmp_path / "ckpt"),
           "--repo", "me/tiny-xdlm", "--train_steps", "600", "--dry_run", "--out", str(out)]
    subprocess.run(cmd, check=True, env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=300)

    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_llada.py", "modeling_llada.py", "README.md",
            "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((out / "config.json").read_text())
    assert config["k1"] == 0.1
    assert config["auto_map"]["AutoModel"] == config["auto_map"]["AutoModelForCausalLM"] == "modeling_llada.LLaDAModelLM"
    card = (out / "README.md").read_text()
    assert "k1 = 0.1" in card and "600 optimizer steps" in card and "trust_remote_code=True" in card
    assert "steps=32" in card and "me/tiny-xdlm" in card
