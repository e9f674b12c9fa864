"""The `xdlm` command: every command in its help and with a working --help, unknown commands named, the aliases
and console scripts, `xdlm sample`, and the next steps a finished training run prints."""

import configparser
import importlib
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llada_xdlm import cli, generate

REPO = Path(__file__).resolve().parents[1]
# One option each command's --help must show (a command added to the table needs its row here).
EXPECTED_OPTION = {
    "train": "--learning_rate", "sample": "--gen_length", "eval": "--model_args", "ppl": "--datasets",
    "gen-ppl": "--evaluator", "fid": "--features", "paper-grid": "--xdlm", "push": "--repo",
    "reproduce-small": "--smoke", "plot-trajectory": "--demo", "prepare-images": "--levels", "check-gpu": "--tiny",
    "pretokenize": "pretokenized_dir",
}


def run_main(argv: list[str]) -> int:
    """cli.main's exit status, whether the command returns it or argparse raises SystemExit."""
    try:
        return cli.main(argv)
    except SystemExit as stop:
        return stop.code


def test_help_and_no_argument_list_every_command(capsys):
    assert set(cli.COMMANDS) == set(EXPECTED_OPTION)
    for argv in ([], ["--help"], ["-h"]):
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: xdlm COMMAND")
        assert all(f"\n  {name} " in out for name in cli.COMMANDS)


@pytest.mark.parametrize("name", sorted(EXPECTED_OPTION))
def test_each_command_help_exits_0_and_lists_its_options(name, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["xdlm"])  # `xdlm eval` hands its arguments to lm-eval through sys.argv
    assert run_main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage:" in out and EXPECTED_OPTION[name] in out


def test_unknown_command_is_refused_naming_the_valid_ones():
    done = subprocess.run([sys.executable, "-m", "llada_xdlm", "trian", "recipes/quickstart.yaml"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "unknown command 'trian'" in done.stderr
    assert all(name in done.stderr for name in cli.COMMANDS)
    assert "Traceback" not in done.stderr


def test_xdlm_train_alias_shows_help_or_usage_without_a_traceback(capsys, monkeypatch):
    for flag in ("--help", "-h"):
        monkeypatch.setattr(sys, "argv", ["xdlm-train", flag])
        assert cli.train() == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: xdlm-train RECIPE.yaml") and "--k1" in out and "--accelerate_config" in out
    monkeypatch.setattr(sys, "argv", ["xdlm-train"])
    with pytest.raises(SystemExit) as stop:
        cli.train()
    assert stop.value.code == 2
    assert "xdlm-train: error: give a YAML recipe first" in capsys.readouterr().err


def test_console_scripts_point_at_the_cli():
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    scripts = dict(line.replace(" ", "").split("=") for line in lines)
    assert scripts == {"xdlm": "llada_xdlm.cli:main", "xdlm-train": "llada_xdlm.cli:train",
                       "xdlm-eval": "llada_xdlm.cli:evaluate"}
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function))


@pytest.fixture
def checkpoint(tiny_model, tiny_tokenizer, tmp_path) -> str:
    tiny_model.config.max_sequence_length = 40
    tiny_model.save_pretrained(tmp_path / "ckpt")
    tiny_tokenizer.save_pretrained(tmp_path / "ckpt")
    return str(tmp_path / "ckpt")


def test_sample_prints_what_generate_gives_for_the_same_settings_and_seed(checkpoint, tiny_model, tiny_tokenizer,
                                                                          capsys):
    prompts = ["The module returns", "Open the file"]
    argv = ["sample", "--model", checkpoint, "--prompt", prompts[0], "--prompt", prompts[1], "--steps", "8",
            "--gen_length", "16", "--temperature", "0.7", "--k1", "0.3", "--seed", "3", "--device", "cpu"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out.splitlines()

    # The library call the README shows, with the same settings.
    enc = tiny_tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    out = generate(tiny_model, enc.input_ids, enc.attention_mask, steps=8, gen_length=16, temperature=0.7, k1=0.3,
                   eos_token_id=tiny_tokenizer.eos_token_id, generator=torch.Generator().manual_seed(3))
    texts = tiny_tokenizer.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
    assert printed == [p + t for p, t in zip(prompts, texts)]
    assert any(texts)


def test_sample_refuses_a_generation_longer_than_the_model_and_bad_settings(checkpoint, tiny_tokenizer, capsys):
    P = len(tiny_tokenizer("The module")["input_ids"])  # the checkpoint holds 40 tokens
    assert run_main(["sample", "--model", checkpoint, "--prompt", "The module", "--gen_length", "64"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (  # after the weights' loading bar
        f"xdlm sample: error: the prompt has {P} tokens; with --gen_length 64 that exceeds the model's "
        f"max_sequence_length=40: pass --gen_length {40 - P} or less, or shorten the prompt.")
    assert run_main(["sample", "--model", checkpoint, "--sampler", "ancestral", "--temperature", "0.5"]) == 2
    assert "temperature applies to sampler='remask' only" in capsys.readouterr().err


def test_sample_says_a_prompt_longer_than_the_model_is_too_long_without_a_negative_gen_length(checkpoint,
                                                                                           tiny_tokenizer, capsys):
    for words in (20, 30):  # 40 and 60 tokens: a prompt of exactly the model's 40 leaves no room either
        prompt = " ".join(["module"] * words)
        P = len(tiny_tokenizer(prompt)["input_ids"])
        assert P == 2 * words
        assert run_main(["sample", "--model", checkpoint, "--prompt", prompt, "--prompt", "The"]) == 2
        assert capsys.readouterr().err.splitlines()[-1] == (
            f"xdlm sample: error: the longest prompt has {P} tokens, and the model holds max_sequence_length=40 "
            f"tokens in all: shorten it to fewer than 40 tokens, to leave room for the generated text.")


def test_next_steps_name_the_folder_and_three_commands():
    assert cli.next_steps("outputs/quickstart", 128, ["The module", "This function returns"],
                          ["data/stdlib_docs/validation.jsonl"]) == (
        "Saved the model and its tokenizer to outputs/quickstart. Next:\n"
        "  xdlm sample --model outputs/quickstart --prompt 'The module' --steps 32 --gen_length 64\n"
        "  xdlm ppl --model outputs/quickstart --datasets data/stdlib_docs/validation.jsonl\n"
        "  xdlm push --model outputs/quickstart --repo YOUR_HF_NAME/quickstart"
    )
    assert cli.next_steps("outputs/llada-8b-xdlm-cpt/", 4096, None, ["valid.parquet"]) == (
        "Saved the model and its tokenizer to outputs/llada-8b-xdlm-cpt/. Next:\n"
        "  xdlm sample --model outputs/llada-8b-xdlm-cpt/ --prompt The --steps 32 --gen_length 256\n"
        "  xdlm eval --model xdlm --model_args pretrained=outputs/llada-8b-xdlm-cpt/,steps=32,gen_length=256"
        " --tasks gsm8k\n"
        "  xdlm push --model outputs/llada-8b-xdlm-cpt/ --repo YOUR_HF_NAME/llada-8b-xdlm-cpt"
    )
    # A run that saved its sampler defaults: the commands use them, no sampler flags.
    assert cli.next_steps("outputs/q", 128, None, None, {"steps": 8, "gen_length": 16}).splitlines()[1:3] == [
        "  xdlm sample --model outputs/q --prompt The",
        "  xdlm eval --model xdlm --model_args pretrained=outputs/q --tasks gsm8k",
    ]


def test_next_steps_commands_run_on_the_model_they_name(checkpoint, corpus_texts, tmp_path, capsys):
    """The sample and evaluate lines as printed, and the push line staged only (--dry_run: no Hub here)."""
    data = tmp_path / "validation.txt"
    data.write_text("\n".join(corpus_texts[:20]))
    lines = cli.next_steps(checkpoint, 40, ["The module"], [str(data)]).splitlines()[1:]
    sample, evaluate, push = (shlex.split(line)[1:] for line in lines)
    assert cli.main(sample) == 0
    assert capsys.readouterr().out.startswith("The module")
    assert cli.main([*evaluate, "--mc_num", "2"]) == 0
    assert "PPL <=" in capsys.readouterr().out
    assert cli.main([*push, "--dry_run", "--out", str(tmp_path / "staged")]) == 0
    assert (tmp_path / "staged" / "README.md").is_file()
