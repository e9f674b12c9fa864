"""LLaDA-8B-Instruct / LLaDA-1.5: the chat template renders Instruct's format, SFT scores the reply and never the
prompt, Instruct's own template (which appends the assistant header after a finished conversation) is refused for
SFT, the recipes set LLaDA's template, and `xdlm sample --chat` prompts through it."""

import copy
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset

from llada_xdlm import cli, generate
from llada_xdlm.tokenization import CHAT_TEMPLATE
from llada_xdlm.training.args import DataArguments, ModelArguments, parse_recipe
from llada_xdlm.training.data import build_dataset
from llada_xdlm.training.train import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
NO_GPU = ["--bf16", "false"]

# chat_template of GSAI-ML/LLaDA-8B-Instruct's tokenizer_config.json (LLaDA-1.5 ships the same), as published.
INSTRUCT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
)
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "  What does the module do?\n"},
    {"role": "assistant", "content": "It parses the command line."},
    {"role": "user", "content": "And the other one?"},
]
# Instruct's format written out: bos; per message the role header, two newlines, the stripped content, <|eot_id|>;
# then the assistant header where the reply starts.
RENDERED = (
    "<|startoftext|>"
    "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWhat does the module do?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nIt parses the command line.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nAnd the other one?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)


@pytest.fixture
def instruct_tokenizer(tiny_tokenizer):
    """The tiny tokenizer with Instruct's own chat template (a copy: the session's tokenizer stays as it is)."""
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = INSTRUCT_TEMPLATE
    return tokenizer


def test_chat_template_renders_llada_instruct_format(tiny_tokenizer, instruct_tokenizer):
    ours = tiny_tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=True, tokenize=False)
    assert ours == RENDERED
    assert instruct_tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=True, tokenize=False) == RENDERED


def test_finished_conversation_ends_with_the_reply_not_an_empty_assistant_turn(tiny_tokenizer):
    done = [*CONVERSATION, {"role": "assistant", "content": "It writes files."}]
    rendered = tiny_tokenizer.apply_chat_template(done, tokenize=False)
    assert rendered == RENDERED + "It writes files.<|eot_id|>"


def test_sft_scores_reply_eot_and_eos_and_never_the_prompt(tiny_tokenizer):
    row = {"messages": [*CONVERSATION, {"role": "assistant", "content": "It writes files."}]}
    data_args = DataArguments(data_files=["x.jsonl"], mode="sft", messages_column="messages", block_size=128)
    (example,) = build_dataset(Dataset.from_list([row]), tiny_tokenizer, data_args, tiny_tokenizer.mask_token_id,
                               0, "train", train=True)
    prompt = tiny_tokenizer(RENDERED, add_special_tokens=False).input_ids
    reply = tiny_tokenizer("It writes files.<|eot_id|>", add_special_tokens=False).input_ids + [
        tiny_tokenizer.eos_token_id]
    assert example["input_ids"] == prompt + reply
    assert example["labels"] == [-100] * len(prompt) + reply


def test_sft_refuses_instructs_own_template_naming_the_fix(instruct_tokenizer):
    data_args = DataArguments(data_files=["x.jsonl"], mode="sft", block_size=64)
    rows = Dataset.from_list([{"prompt": "Hi?", "response": "Hello."}])
    with pytest.raises(ValueError, match="appends the assistant header.*tokenizer_kwargs"):
        build_dataset(rows, instruct_tokenizer, data_args, instruct_tokenizer.mask_token_id, 0, "train", train=True)


@pytest.mark.parametrize("name", ["llada_instruct_sft.yaml", "llada_sft_lora.yaml"])
def test_sft_recipes_replace_instructs_template_with_llada_format(name, instruct_tokenizer, tmp_path):
    """A checkpoint saved with Instruct's own template loads, through the recipe's tokenizer_kwargs, with ours."""
    recipe = yaml.safe_load((REPO / "recipes" / name).read_text())
    assert recipe["model_name_or_path"] == "GSAI-ML/LLaDA-8B-Instruct" and recipe["mode"] == "sft"
    instruct_tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(ModelArguments(model_name_or_path=str(tmp_path),
                                           tokenizer_kwargs=recipe["tokenizer_kwargs"]), None, None)
    assert loaded.chat_template == CHAT_TEMPLATE


def test_instruct_sft_recipe_has_llada_sft_settings():
    """Expected values: LLaDA's SFT (its paper): AdamW with weight decay 0.1, 2.5e-5 after 50 warmup steps,
    3 epochs, 256 sequences per step on 8 GPUs, sequences of 4096 tokens."""
    model_args, data_args, diff_args, args = parse_recipe([str(REPO / "recipes" / "llada_instruct_sft.yaml"), *NO_GPU])
    assert model_args.model_name_or_path == "GSAI-ML/LLaDA-8B-Instruct" and not model_args.use_lora
    assert data_args.mode == "sft" and data_args.block_size == 4096
    assert (diff_args.objective, diff_args.k1) == ("xdlm", 0.1)
    assert (args.learning_rate, args.warmup_steps, args.weight_decay, args.num_train_epochs) == (2.5e-5, 50, 0.1, 3)
    assert 8 * args.per_device_train_batch_size * args.gradient_accumulation_steps == 256


def test_sample_chat_prompts_through_the_template_and_prints_the_reply(checkpoint, tiny_model, tiny_tokenizer,
                                                                       capsys):
    argv = ["sample", "--model", checkpoint, "--chat", "--prompt", "What does the module do?", "--steps", "4",
            "--gen_length", "8", "--seed", "1", "--device", "cpu"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    prompt = tiny_tokenizer(
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat does the module do?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n", add_special_tokens=False, return_tensors="pt").input_ids
    out = generate(tiny_model, prompt, steps=4, gen_length=8, eos_token_id=tiny_tokenizer.eos_token_id,
                   generator=torch.Generator().manual_seed(1))
    reply = tiny_tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)
    assert printed == [reply]


def test_sample_chat_refuses_a_tokenizer_without_template(checkpoint, capsys):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(checkpoint)
    (Path(checkpoint) / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["sample", "--model", checkpoint, "--chat", "--prompt", "Hi", "--device", "cpu"])
    assert exit_info.value.code == 2
    assert "--chat needs a tokenizer with a chat template" in capsys.readouterr().err
