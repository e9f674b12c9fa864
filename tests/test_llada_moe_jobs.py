"""`xdlm train`, `xdlm sample`, `xdlm eval` and `xdlm paper-grid` on a tiny random-weight LLaDA-MoE checkpoint
(CPU, the tiny tokenizer, offline fixture tasks), and the LLaDA-MoE recipe against the paper's LLaDA recipe."""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from llada_xdlm import LLaDAMoEConfig, LLaDAMoEModelLM, cli, generate
from llada_xdlm.modeling import load_config, model_class
from llada_xdlm.training.args import parse_recipe
from llada_xdlm.training.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "stdlib_docs"
FIXTURE_TASKS = REPO / "tests" / "fixtures" / "eval_tasks"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
NO_GPU = ["--bf16", "false"]


@pytest.fixture
def moe_checkpoint(tiny_tokenizer, tmp_path) -> str:
    """A tiny LLaDA-MoE (a dense layer, then 4 experts with 2 active and a shared expert) and the tiny tokenizer."""
    V = len(tiny_tokenizer)
    config = LLaDAMoEConfig(
        vocab_size=V, hidden_size=32, dense_intermediate_size=64, expert_intermediate_size=32,
        shared_expert_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4, num_experts=4,
        num_experts_per_tok=2, moe_layer_freq=[0, 1], max_position_embeddings=256,
        mask_token_id=tiny_tokenizer.mask_token_id, bos_token_id=tiny_tokenizer.bos_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id, pad_token_id=tiny_tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path / "tiny-llada-moe"
    LLaDAMoEModelLM(config).float().save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return str(path)


def test_train_continues_a_llada_moe_checkpoint_and_saves_one(moe_checkpoint, tmp_path):
    recipe = tmp_path / "moe.yaml"
    out = tmp_path / "out"
    recipe.write_text(yaml.safe_dump(dict(
        model_name_or_path=moe_checkpoint, data_files=[str(CORPUS / "train.jsonl")], block_size=32, objective="xdlm",
        k1=0.1, use_cpu=True, seed=0, max_steps=3, per_device_train_batch_size=4, learning_rate=1e-3,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, output_dir=str(out),
    )))
    before = LLaDAMoEModelLM.from_pretrained(moe_checkpoint).state_dict()
    train_main([str(recipe)])
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3]
    config = load_config(str(out))
    assert isinstance(config, LLaDAMoEConfig) and (config.objective, config.k1) == ("xdlm", 0.1)
    after = model_class(config).from_pretrained(out).state_dict()
    # Every part trained: attention, the router, an expert, the shared expert, the dense layer, the LM head.
    for name in ["model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.gate.weight",
                 "model.layers.1.mlp.experts.3.down_proj.weight", "model.layers.1.shared_expert.up_proj.weight",
                 "model.layers.0.mlp.gate_proj.weight", "lm_head.weight"]:
        assert not torch.equal(before[name], after[name]), name


def test_sample_generates_from_a_llada_moe_checkpoint(moe_checkpoint, capsys):
    argv = ["sample", "--model", moe_checkpoint, "--prompt", "The module", "--steps", "4", "--gen_length", "8",
            "--seed", "0", "--device", "cpu"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.startswith("The module")
    assert cli.main([*argv, "--cache", "dual", "--block_length", "4"]) == 0


def test_dual_cache_sampling_runs_spans_against_the_cache(moe_checkpoint, tiny_tokenizer):
    """With cache="dual" the sampler's later steps run the block alone against the cached keys and values of the
    rest (past_key_values given), and the canvas is filled; without it every forward runs the whole canvas."""
    model = LLaDAMoEModelLM.from_pretrained(moe_checkpoint).eval()
    spans = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: spans.append(kwargs.get("past_key_values") is not None), with_kwargs=True)
    ids = tiny_tokenizer(["The module returns"], return_tensors="pt").input_ids
    settings = dict(steps=8, gen_length=8, block_length=4)
    with torch.no_grad():
        generate(model, ids, **settings)
        assert not any(spans)
        cached = generate(model, ids, cache="dual", **settings)
    assert any(spans)
    assert torch.equal(cached[:, : ids.shape[1]], ids) and cached.shape[1] == ids.shape[1] + 8
    assert not (cached == model.config.mask_token_id).any()


@pytest.mark.slow
def test_eval_runs_lm_eval_tasks_on_a_llada_moe_checkpoint(moe_checkpoint, tmp_path):
    tasks = "xdlm_fixture_gsm8k,xdlm_fixture_mc"
    done = subprocess.run(
        [sys.executable, "-m", "llada_xdlm", "eval", "--model", "xdlm", "--model_args",
         f"pretrained={moe_checkpoint},steps=4,gen_length=8,mc_num=2,batch_size=4,max_length=32,dtype=float32",
         "--tasks", tasks, "--include_path", str(FIXTURE_TASKS), "--output_path", str(tmp_path / "out"),
         "--device", "cpu"],
        cwd=tmp_path, env={**os.environ, **OFFLINE}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (results_file,) = glob.glob(str(tmp_path / "out" / "**" / "results_*.json"), recursive=True)
    results = json.loads(Path(results_file).read_text())["results"]
    assert 0 <= results["xdlm_fixture_gsm8k"]["exact_match,flexible-extract"] <= 1
    assert 0 <= results["xdlm_fixture_mc"]["acc,none"] <= 1


@pytest.mark.slow
def test_paper_grid_runs_a_llada_moe_checkpoint(moe_checkpoint, tmp_path):
    output = tmp_path / "grid"
    done = subprocess.run(
        [sys.executable, "-m", "llada_xdlm", "paper-grid", "--output", str(output), "--model",
         f"moe={moe_checkpoint}:0", "--steps", "2", "--tasks", "xdlm_fixture_gsm8k", "--include_path",
         str(FIXTURE_TASKS), "--model_args", "gen_length=8,block_length=8,dtype=float32,max_length=256,device=cpu"],
        cwd=tmp_path, env={**os.environ, **OFFLINE}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    cell = json.loads((output / "cells" / "moe" / "steps2" / "xdlm_fixture_gsm8k.json").read_text())
    assert 0.0 <= cell["score"] <= 100.0
    assert "| moe | 0 | 2 |" in (output / "grid.md").read_text()


def test_llada_moe_recipe_is_the_llada_recipe_with_llada_moe():
    """Every setting of the paper's LLaDA recipe, but the model and the output folder."""
    moe = parse_recipe([str(REPO / "recipes" / "llada_moe_cpt.yaml"), *NO_GPU])
    llada = parse_recipe([str(REPO / "recipes" / "llada_cpt.yaml"), *NO_GPU])
    assert moe[0].model_name_or_path == "inclusionAI/LLaDA-MoE-7B-A1B-Base"
    assert moe[3].output_dir == "outputs/llada-moe-7b-a1b-xdlm-cpt"
    assert vars(moe[1]) == vars(llada[1]) and vars(moe[2]) == vars(llada[2])  # data, diffusion
    assert {k: v for k, v in vars(moe[0]).items() if "name_or_path" not in k} == \
           {k: v for k, v in vars(llada[0]).items() if "name_or_path" not in k}
    moe_args, llada_args = moe[3].to_dict(), llada[3].to_dict()
    differ = {k for k in llada_args if moe_args[k] != llada_args[k]}
    assert differ <= {"output_dir", "logging_dir", "run_name"}, differ
