"""LLaDA-MoE under DeepSpeed ZeRO-3 on CPU (gloo): two processes train exactly as one process without ZeRO on the same
global batch. Each rank holds a few short rows routed top-1 over 16 experts, so some experts get no token on one rank
and some on the other: the ranks must still gather the same partitioned parameters in the same order (every expert
runs, on no tokens if need be), or they hang or lose the experts' gradients."""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import llada_xdlm.diffusion as diffusion
from llada_xdlm import LLaDAMoEConfig, LLaDAMoEModelLM, build_tokenizer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_training_zero3 import CORPUS, env, recipe, run  # noqa: E402
from test_training import losses  # noqa: E402
from training_launch import fixed_forward_process, fixed_sample_t  # noqa: E402


@pytest.mark.slow
def test_two_process_zero3_trains_llada_moe_as_one_process(tmp_path, monkeypatch):
    texts = [json.loads(line)["text"] for line in (CORPUS / "train.jsonl").read_text().splitlines()]
    tokenizer = build_tokenizer(texts, 512)
    V = len(tokenizer)
    config = LLaDAMoEConfig(
        vocab_size=V, hidden_size=32, dense_intermediate_size=64, expert_intermediate_size=32,
        shared_expert_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4, num_experts=16,
        num_experts_per_tok=1, moe_layer_freq=[1, 1], max_position_embeddings=64,
        mask_token_id=tokenizer.mask_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LLaDAMoEModelLM(config).save_pretrained(tmp_path / "init")  # both runs start from these weights
    tokenizer.save_pretrained(tmp_path / "init")
    common = dict(max_steps=2, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant", max_grad_norm=1e9,
                  random_length_prob=1.0, model_name_or_path=str(tmp_path / "init"), model_config=None,
                  block_size=16)
    two = recipe(tmp_path, "two", per_device_train_batch_size=2, **common)
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                  str(REPO / "tests" / "configs" / "accelerate_zero3_cpu_2proc.yaml"), "--main_process_port", "29671"]
    run([*accelerate, "tests/training_launch.py", two], env(29671, XDLM_FIXED_NOISE="1"), timeout=300)

    from llada_xdlm.training.train import main

    monkeypatch.setattr(diffusion, "sample_t", fixed_sample_t)
    monkeypatch.setattr(diffusion, "forward_process", fixed_forward_process)
    one = recipe(tmp_path, "one", per_device_train_batch_size=4, deepspeed=None, ddp_backend=None, **common)
    main([one])

    assert losses(tmp_path / "two")[2] == pytest.approx(losses(tmp_path / "one")[2], rel=1e-4)
    a, b = load_file(tmp_path / "two" / "model.safetensors"), load_file(tmp_path / "one" / "model.safetensors")
    init = load_file(tmp_path / "init" / "model.safetensors")
    assert any(".experts." in k and not torch.equal(a[k], init[k]) for k in a)  # the experts trained
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
