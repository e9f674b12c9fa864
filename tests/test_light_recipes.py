"""The light recipes (LM1B, OpenWebText, CIFAR-10 pixels, digits) parse with the paper's settings and train 16
steps through the real entry point on a tiny stand-in (tiny model, tokenizer built from a tiny corpus or the pixel
tokenizer, local data), offline, lowering the validation NELBO."""

import json
import os

import numpy as np
import pytest

from llada_xdlm.training import parse_recipe
from llada_xdlm.training.images import digits_levels, write_image_corpus

RECIPES = os.path.join(os.path.dirname(__file__), "..", "recipes")
TINY_MODEL = "{d_model: 32, n_layers: 1, n_heads: 2, n_kv_heads: 2, mlp_hidden_size: 64, max_sequence_length: 80}"


def recipe(name: str) -> str:
    return os.path.join(RECIPES, f"{name}.yaml")


def parse(name: str, *overrides: str):
    """The recipe's dataclasses; use_cpu because TrainingArguments rejects bf16 on a machine without a GPU."""
    return parse_recipe([recipe(name), "--use_cpu", "true", *overrides])


def tiny_run_overrides(tmp_path, train_file, eval_file, block_size, tokenizer=""):
    """CLI overrides that keep each recipe's objective/schedule/optimiser and learning rate but make the run tiny,
    local and CPU: 16 steps without warm-up (the recipes' 100-2500 warm-up steps would keep the learning rate
    near 0 for a short run)."""
    return [
        "--model_config", TINY_MODEL, "--tokenizer_name_or_path", tokenizer, "--tokenizer_vocab_size", "300",
        "--data_files", str(train_file), "--eval_data_files", str(eval_file), "--eval_rows", "0",
        "--block_size", str(block_size), "--max_steps", "16", "--warmup_steps", "0",
        "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--per_device_eval_batch_size", "8",
        "--output_dir", str(tmp_path / "out"),
        "--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--dataloader_num_workers", "0",
        "--eval_strategy", "no", "--save_strategy", "no", "--disable_tqdm", "true",
    ]


@pytest.fixture
def text_files(tmp_path, corpus_texts):
    paths = []
    for name, texts in (("train", corpus_texts[:-20]), ("val", corpus_texts[-20:])):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        paths.append(path)
    return paths


def train_briefly(argv, monkeypatch):
    """Run the recipe; the validation NELBO (same noise seed before and after) must fall by at least 1%. Measured
    falls: 1.6% (text recipes), 4.2% (CIFAR-10 stand-in), 12% (digits); gradient ascent raises it."""
    from llada_xdlm.training.train import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metrics = main(argv)
    assert np.isfinite(metrics["train_loss"])
    assert metrics["nelbo_after"] < 0.99 * metrics["nelbo_before"], metrics
    return metrics


def test_lm1b_small_has_the_papers_small_model_and_optimiser():
    model, data, diffusion, training = parse("lm1b_small")
    cfg = model.model_config
    assert (cfg["n_layers"], cfg["d_model"], cfg["n_heads"]) == (12, 768, 12)
    assert model.tokenizer_name_or_path == "bert-base-uncased"
    assert model.tokenizer_kwargs == {"eos_token": "[SEP]"}  # bert has no EOS; the packer needs one
    assert data.block_size == 128 == cfg["max_sequence_length"] and data.streaming
    assert diffusion.schedule == "loglinear" and diffusion.objective == "xdlm" and diffusion.k1 == 0.1
    assert training.learning_rate == 3e-4 and training.warmup_steps == 2500 and training.optim.startswith("adamw")
    assert training.per_device_train_batch_size * training.gradient_accumulation_steps == 512


def test_tokenizer_kwargs_reach_the_loaded_tokenizer(tiny_tokenizer, tmp_path):
    from llada_xdlm.training.train import load_tokenizer

    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    model, data, _, _ = parse("lm1b_small", "--tokenizer_name_or_path", str(tmp_path / "tok"),
                              "--tokenizer_kwargs", "{eos_token: '<|eot_id|>'}")
    tokenizer = load_tokenizer(model, data, raw_train=None)
    assert tokenizer.eos_token == "<|eot_id|>" and tokenizer.eos_token_id == tiny_tokenizer.convert_tokens_to_ids("<|eot_id|>")


def test_owt_small_uses_gpt2_plus_one_mask_id_and_length_1024():
    model, data, diffusion, training = parse("owt_small")
    cfg = model.model_config
    assert model.tokenizer_name_or_path == "gpt2"
    assert cfg["vocab_size"] == cfg["embedding_size"] == 50258 and cfg["mask_token_id"] == 50257
    assert data.block_size == 1024 == cfg["max_sequence_length"]
    assert (cfg["n_layers"], cfg["d_model"], cfg["n_heads"]) == (12, 768, 12)
    assert training.learning_rate == 3e-4 and training.warmup_steps == 2500
    assert training.per_device_train_batch_size * training.gradient_accumulation_steps == 512


@pytest.mark.parametrize("name", ["lm1b_small", "owt_small"])
def test_text_recipe_objective_switch(name):
    assert parse(name, "--objective", "mdlm")[2].k1 == 0.0
    assert parse(name, "--objective", "udlm")[2].k1 == 1.0
    assert parse(name, "--k1", "0.3")[2].k1 == 0.3


def test_image_recipes_are_one_image_plus_eos_per_block():
    _, data, _, _ = parse("cifar10_pixels")
    assert data.block_size == 32 * 32 * 3 + 1 and data.random_length_prob == 0.0
    model, data, _, _ = parse("digits_small")
    assert data.block_size == 8 * 8 + 1 == model.model_config["max_sequence_length"]
    assert data.random_length_prob == 0.0


@pytest.mark.parametrize("name", ["lm1b_small", "owt_small"])
def test_text_recipe_lowers_the_validation_nelbo_on_a_tiny_stand_in(name, tmp_path, text_files, monkeypatch):
    train_briefly([recipe(name), *tiny_run_overrides(tmp_path, *text_files, block_size=32),
                     "--streaming", "false"], monkeypatch)
    assert (tmp_path / "out" / "config.json").exists()


def test_digits_recipe_lowers_the_validation_nelbo_on_real_digits(tmp_path, monkeypatch):
    images, _ = digits_levels(16)
    data = tmp_path / "digits16"
    write_image_corpus(images[:300], images[300:340], 16, str(data))
    argv = tiny_run_overrides(tmp_path, data / "train.jsonl", data / "validation.jsonl", block_size=65,
                              tokenizer=str(data / "tokenizer"))
    train_briefly([recipe("digits_small"), *argv], monkeypatch)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["embedding_size"] == 3 + 16 and config["k1"] == 0.1


def test_cifar10_recipe_lowers_the_validation_nelbo_on_tiny_256_level_images(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    # stand-in for 32x32x3 CIFAR-10 pixels: 48 tokens each, 256 grey levels of which only every 16th occurs (a
    # pattern 16 steps can learn; uniform random pixels have none)
    images = rng.integers(0, 16, size=(40, 4, 4, 3)) * 16
    data = tmp_path / "pixels"
    write_image_corpus(images[:32], images[32:], 256, str(data))
    argv = tiny_run_overrides(tmp_path, data / "train.jsonl", data / "validation.jsonl", block_size=49,
                              tokenizer=str(data / "tokenizer"))
    train_briefly([recipe("cifar10_pixels"), *argv], monkeypatch)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["embedding_size"] == 3 + 256
