"""Every shipped recipe parses, and the paper's recipe carries the authors' training settings."""

from pathlib import Path

import pytest
import yaml

from llada_xdlm.training.args import parse_recipe

REPO = Path(__file__).resolve().parents[1]
NO_GPU = ["--bf16", "false"]  # the 8B recipes train in bf16 on GPUs; TrainingArguments refuses bf16 on CPU
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_parses(path):
    bf16 = yaml.safe_load(path.read_text()).get("bf16")
    parse_recipe([str(path), *(NO_GPU if bf16 else [])])


def test_llada_cpt_recipe_matches_the_authors_command():
    """Expected values: the `deepspeed llada_cpt.py ...` command in the LLaDA-XDLM README (their run; Adam betas
    and epsilon are transformers' TrainingArguments defaults there, which their command leaves as they are)."""
    model_args, data_args, diff_args, args = parse_recipe([str(REPO / "recipes" / "llada_cpt.yaml"), *NO_GPU])
    assert model_args.model_name_or_path == "GSAI-ML/LLaDA-8B-Base"
    assert (data_args.dataset_name, data_args.dataset_config) == ("HuggingFaceFW/fineweb-edu", "sample-10BT")
    assert data_args.streaming and data_args.block_size == 4096 and data_args.random_length_prob == 0.0
    assert (diff_args.objective, diff_args.k1, diff_args.schedule, diff_args.eps) == ("xdlm", 0.1, "linear", 1e-3)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (1, 64)
    assert (args.learning_rate, args.lr_scheduler_type.value, args.warmup_steps) == (2e-5, "constant_with_warmup", 100)
    assert (args.weight_decay, args.max_grad_norm, args.max_steps) == (0.1, 1.0, 1000)
    assert (args.adam_beta1, args.adam_beta2, args.adam_epsilon) == (0.9, 0.999, 1e-8)
    assert args.save_steps == 100 and 600 % args.save_steps == 0  # the paper evaluates checkpoint-600
    assert args.seed == 42
