"""Staging a checkpoint for the Hub (`xdlm push`): remote code, tokenizer and a model card that says how to use it;
the staged folder loads without this package."""

import json
import os
import subprocess
import sys
import textwrap

import torch

from llada_xdlm import cli
from llada_xdlm.hub import CardInfo, stage_for_hub


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
    stage_for_hub(str(tmp_path / "ckpt"), tmp_path / "model", CardInfo("me/tiny-xdlm"))
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
