"""Every shipped recipe parses as `xdlm train` hands it to training, names a launcher that exists, and the paper's
recipe carries the authors' training settings."""

from pathlib import Path

import pytest
import yaml

from llada_xdlm.launch import LAUNCHER_KEY
from llada_xdlm.training.args import parse_recipe

REPO = Path(__file__).resolve().parents[1]
NO_GPU = ["--bf16", "false"]  # the 8B recipes train in bf16 on GPUs; TrainingArguments refuses bf16 on CPU
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))  # not recipes/accelerate/: launcher configs, not recipes


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_parses(path, monkeypatch):
    monkeypatch.chdir(REPO)  # recipes name their files relative to the repository root
    recipe = yaml.safe_load(path.read_text())
    parse_recipe([str(path), *(NO_GPU if recipe.get("bf16") else [])])
    if LAUNCHER_KEY in recipe:
        launcher = yaml.safe_load(Path(recipe[LAUNCHER_KEY]).read_text())
        assert launcher["distributed_type"] in ("DEEPSPEED", "MULTI_GPU", "FSDP")
        assert launcher["num_machines"] == 1  # `xdlm train` starts one machine's processes


def test_gpu_recipes_name_their_launcher():
    """The 8B recipes start under DeepSpeed from `xdlm train RECIPE` alone."""
    launchers = {p.name: yaml.safe_load(p.read_text()).get(LAUNCHER_KEY) for p in RECIPES}
    assert launchers["llada_cpt.yaml"] == "recipes/accelerate/deepspeed_zero3.yaml"
    assert launchers["llada_sft_lora.yaml"] == "recipes/accelerate/deepspeed_zero2.yaml"


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


def test_dream_cpt_recipe_is_the_papers_run_on_dream_at_its_context_length():
    """The llada_cpt settings with Dream-7B's checkpoint, 2048-token blocks (Dream's training length) and twice the
    accumulation: the same 8 x 1 x 128 x 2048 = 2,097,152 tokens per step as 8 x 1 x 64 x 4096."""
    llada = parse_recipe([str(REPO / "recipes" / "llada_cpt.yaml"), *NO_GPU])
    dream = parse_recipe([str(REPO / "recipes" / "dream_cpt.yaml"), *NO_GPU])
    assert dream[0].model_name_or_path == "Dream-org/Dream-v0-Base-7B"
    assert dream[1].block_size * dream[3].gradient_accumulation_steps == 2048 * 128 == 4096 * 64
    assert vars(dream[2]) == vars(llada[2])  # objective, k1, schedule, eps, loss: the paper's
    same = ["per_device_train_batch_size", "max_steps", "learning_rate", "lr_scheduler_type", "warmup_steps",
            "weight_decay", "max_grad_norm", "adam_beta1", "adam_beta2", "adam_epsilon", "save_steps", "seed"]
    assert {k: getattr(dream[3], k) for k in same} == {k: getattr(llada[3], k) for k in same}
    assert yaml.safe_load((REPO / "recipes" / "dream_cpt.yaml").read_text())[LAUNCHER_KEY] == \
        "recipes/accelerate/deepspeed_zero3.yaml"
