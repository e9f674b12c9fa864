"""What a checkpoint records about its training (objective, k1, schedule, eps, antithetic) and its sampler defaults
(`sampling`), and every consumer reading them: generate(), `xdlm sample`, `xdlm ppl`, the lm-eval model and the
trainer's end-of-run samples. Explicit settings win and are logged when they contradict the checkpoint."""

import contextlib
import io
import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from lm_eval.api.instance import Instance
from test_modeling import OFFICIAL_CONFIG

from llada_xdlm import LLaDAConfig, SamplerConfig, checkpoint, cli, generate, sampling
from llada_xdlm.evaluation import perplexity
from llada_xdlm.evaluation.lm_eval_model import XDLMEvalLM
from llada_xdlm.training.args import parse_recipe
from llada_xdlm.training.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "stdlib_docs"
RECIPE = dict(
    model_config=dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden_size=128, max_sequence_length=64),
    tokenizer_vocab_size=512,
    data_files=[str(CORPUS / "train.jsonl")],
    block_size=64,
    use_cpu=True,
    seed=0,
    max_steps=2,
    per_device_train_batch_size=4,
    learning_rate=1.0e-3,
    save_strategy="no",
    report_to="none",
    disable_tqdm=True,
)
UDLM_LOGLINEAR = dict(objective="udlm", schedule="loglinear", eps=0.01, antithetic=True,
                      sampling=dict(steps=4, gen_length=8, sampler="ancestral"), sample_prompts=["The module"])


def write_recipe(folder: Path, **overrides) -> str:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, "output_dir": str(folder / "run"), **overrides}))
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[str, str]:
    """(output_dir, what the run printed) of a tiny model trained through the real entry point with objective udlm,
    the log-linear schedule and ancestral-sampler defaults."""
    folder = tmp_path_factory.mktemp("udlm")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        train_main([write_recipe(folder, **UDLM_LOGLINEAR)])
    return str(folder / "run"), printed.getvalue()


@pytest.fixture
def ancestral_calls(monkeypatch) -> list[tuple[float, float, float]]:
    """(alpha_t, alpha_s, k1) of every ancestral step the sampler takes."""
    calls = []
    step = sampling.ancestral_step

    def spy(logits, z_t, alpha_t, alpha_s, k1, *args):
        calls.append((float(alpha_t[0]), float(alpha_s[0]), k1))
        return step(logits, z_t, alpha_t, alpha_s, k1, *args)

    monkeypatch.setattr(sampling, "ancestral_step", spy)
    return calls


# Steps uniform in t from 1 to 0 (4 steps), by hand: linear alpha = 1 - t (the first one just above 0, 1e-9);
# log-linear alpha = 1 - (1 - 1e-3) t.
LINEAR_GRID = [1e-9, 0.25, 0.5, 0.75, 1.0]
LOGLINEAR_GRID = [0.001, 0.25075, 0.5005, 0.75025, 1.0]


def grid(calls) -> list[float]:
    return [calls[0][0]] + [alpha_s for _, alpha_s, _ in calls]


def sample(checkpoint_dir: str, capsys, *flags: str) -> list[str]:
    assert cli.main(["sample", "--model", checkpoint_dir, "--prompt", "The module", "--device", "cpu", *flags]) == 0
    return capsys.readouterr().out.splitlines()


# ---- the acceptance run: objective udlm, schedule loglinear, no flag afterwards ---------------------------------


def test_a_udlm_loglinear_run_saves_its_training_settings_and_sampler_defaults_in_config_json(trained):
    output_dir, printed = trained
    config = json.loads((Path(output_dir) / "config.json").read_text())
    recorded = {key: config[key] for key in ("objective", "k1", "schedule", "eps", "antithetic", "sampling")}
    assert recorded == dict(objective="udlm", k1=1.0, schedule="loglinear", eps=0.01, antithetic=True,
                            sampling=dict(steps=4, gen_length=8, sampler="ancestral"))
    assert "[4-step sample] The module|" in printed  # the end-of-run sample used the saved sampler defaults


def test_xdlm_sample_uses_the_checkpoints_k1_schedule_and_sampler_without_flags(trained, ancestral_calls, capsys):
    output_dir, _ = trained
    default = sample(output_dir, capsys)
    assert grid(ancestral_calls) == pytest.approx(LOGLINEAR_GRID, abs=1e-12)
    assert {k1 for _, _, k1 in ancestral_calls} == {1.0}
    ancestral_calls.clear()
    explicit = sample(output_dir, capsys, "--steps", "4", "--gen_length", "8", "--sampler", "ancestral", "--k1", "1",
                      "--schedule", "loglinear")
    assert explicit == default and grid(ancestral_calls) == pytest.approx(LOGLINEAR_GRID, abs=1e-12)
    ancestral_calls.clear()
    sample(output_dir, capsys, "--schedule", "linear")
    assert grid(ancestral_calls) == pytest.approx(LINEAR_GRID, abs=1e-12)


def test_xdlm_ppl_uses_the_checkpoints_k1_without_flags(trained):
    output_dir, _ = trained
    common = ["--model", output_dir, "--datasets", str(CORPUS / "validation.jsonl"), "--block_size", "32",
              "--max_blocks", "2", "--mc_num", "4", "--device", "cpu"]
    (default,) = perplexity.main(common).values()
    (explicit,) = perplexity.main([*common, "--k1", "1"]).values()
    (other,) = perplexity.main([*common, "--k1", "0.5"]).values()
    assert default["k1"] == 1.0 and default == explicit
    assert other["nelbo"] != default["nelbo"]


def test_lm_eval_uses_the_checkpoints_k1_schedule_sampler_and_estimator_without_model_args(trained):
    output_dir, _ = trained
    common = dict(pretrained=output_dir, device="cpu", dtype="float32", mc_num=4, batch_size=4)
    default = XDLMEvalLM(**common)
    assert default.sampler == SamplerConfig(steps=4, gen_length=8, sampler="ancestral", k1=1.0, schedule="loglinear")
    assert default.estimator == "xdlm"
    explicit = XDLMEvalLM(**common, steps=4, gen_length=8, sampler="ancestral", k1=1.0, schedule="loglinear",
                          likelihood="xdlm")
    masking = XDLMEvalLM(**common, likelihood="mdlm")
    scored = [Instance("loglikelihood", {}, ("The json module", " provides"), 0)]
    prompts = [Instance("generate_until", {}, ("The module", {"until": []}), 0)]
    torch.manual_seed(0)  # the ancestral sampler draws from the global generator here
    text = default.generate_until(prompts)
    torch.manual_seed(0)
    assert explicit.generate_until(prompts) == text
    assert default.loglikelihood(scored) == explicit.loglikelihood(scored)
    assert masking.loglikelihood(scored)[0][0] != default.loglikelihood(scored)[0][0]


# ---- explicit settings, autoregressive checkpoints --------------------------------------------------------------


def test_an_explicit_k1_that_contradicts_the_checkpoint_is_used_and_logged(tiny_model, caplog, ancestral_calls):
    tiny_model.config.k1 = 0.1
    checkpoint._log_once.cache_clear()
    ids = torch.tensor([[5, 6, 7]])
    with caplog.at_level(logging.WARNING, logger="llada_xdlm.checkpoint"):
        generate(tiny_model, ids, steps=2, gen_length=4, sampler="ancestral", k1=0.37)
    assert {k1 for _, _, k1 in ancestral_calls} == {0.37}
    assert "k1=0.37 differs from the k1=0.1 this checkpoint was trained with" in caplog.text


def test_an_autoregressive_checkpoint_is_refused_by_the_sampler_ppl_and_lm_eval(tiny_model, tiny_tokenizer,
                                                                              tmp_path):
    tiny_model.config.objective = "ar"
    ids = torch.tensor([[5, 6, 7, 8]])
    with pytest.raises(ValueError, match="trained with objective 'ar'.*the diffusion sampler"):
        generate(tiny_model, ids, steps=2, gen_length=4)
    with pytest.raises(ValueError, match="trained with objective 'ar'.*perplexity bound"):
        perplexity.ppl_bound(tiny_model, ids, mc_num=2)
    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="trained with objective 'ar'"):
        XDLMEvalLM(pretrained=str(tmp_path), device="cpu")


# ---- the sampler defaults a model carries ----------------------------------------------------------------------


def count_forwards(model) -> list[int]:
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_generate_reads_the_models_sampler_defaults_and_explicit_settings_win(tiny_model):
    tiny_model.config.sampling = {"steps": 2, "gen_length": 4}
    forwards = count_forwards(tiny_model)
    ids = torch.tensor([[5, 6, 7]])
    assert generate(tiny_model, ids).shape == (1, 3 + 4) and len(forwards) == 2
    forwards.clear()
    # gen_length 6 without block_length is one block of 6 (not blocks of the saved gen_length 4): 2 forwards.
    assert generate(tiny_model, ids, gen_length=6).shape == (1, 3 + 6) and len(forwards) == 2
    forwards.clear()
    out = generate(tiny_model, ids, config=SamplerConfig(steps=3, gen_length=5))  # a whole config wins as it is
    assert out.shape == (1, 3 + 5) and len(forwards) == 3
    tiny_model.config.sampling = {"stepz": 2}
    with pytest.raises(ValueError, match=r"config.json `sampling`.*unknown sampler setting\(s\) \['stepz'\]"):
        generate(tiny_model, ids)


# ---- the config ------------------------------------------------------------------------------------------------


def test_a_config_without_training_keys_describes_llada_8b_base(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(OFFICIAL_CONFIG))
    config = LLaDAConfig.from_pretrained(tmp_path)
    recorded = {key: getattr(config, key) for key in ("objective", "k1", "schedule", "eps", "antithetic", "sampling")}
    assert recorded == dict(objective=None, k1=0.0, schedule="linear", eps=1e-3, antithetic=False, sampling={})
    assert checkpoint.trained_setting(config, "objective") == "mdlm"


@pytest.mark.parametrize("k1,objective", [(0.0, "mdlm"), (0.1, "xdlm"), (1.0, "udlm")])
def test_an_objective_not_recorded_follows_from_k1_even_when_k1_is_set_later(tmp_path, k1, objective):
    config = LLaDAConfig()
    config.k1 = k1  # e.g. a merged LoRA model given the k1 its adapter was trained with
    config.save_pretrained(tmp_path)
    assert checkpoint.trained_setting(LLaDAConfig.from_pretrained(tmp_path), "objective") == objective


@pytest.mark.parametrize("settings,message", [
    (dict(objective="mdlm", k1=0.5), r"objective='mdlm' trains with k1=0.0, but k1=0.5"),
    (dict(objective="udlm", k1=0.0), r"objective='udlm' trains with k1=1.0"),
    (dict(objective="bert"), r"objective='bert' is not one of"),
    (dict(schedule="cosine"), r"schedule='cosine' is not one of"),
    (dict(eps=1.0), r"eps=1.0 must lie in \[0, 1\)"),
    (dict(antithetic="yes"), r"antithetic='yes' must be true or false"),
    (dict(sampling="fast"), r"sampling='fast' must be a mapping"),
])
def test_a_config_refuses_training_settings_that_cannot_be(settings, message):
    with pytest.raises(ValueError, match=message):
        LLaDAConfig(**settings)


# ---- the recipe ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides,message", [
    (dict(sampling=dict(stepz=4)), r"sampling: unknown sampler setting\(s\) \['stepz'\]; valid: \[.*'steps'"),
    (dict(sampling=dict(gen_length=10, block_length=4)), r"gen_length=10 is not a multiple of block_length=4"),
    (dict(objective="ar", sampling=dict(steps=4)), r"objective='ar' trains a causal model: remove sampling"),
])
def test_recipe_sampling_is_checked_when_the_recipe_is_read(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        parse_recipe([write_recipe(tmp_path, **overrides)])


def test_sample_prompts_that_cannot_fit_the_model_stop_the_run_before_training(tmp_path):
    recipe = write_recipe(tmp_path, sample_prompts=["The module"])  # no sampling: gen_length 256 > 64 positions
    with pytest.raises(ValueError, match=r"gen_length=256 exceeds the model's max_sequence_length=64"):
        train_main([recipe])
    assert not (tmp_path / "run" / "trainer_state.json").exists()
