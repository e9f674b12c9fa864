"""Dream-7B as a backbone: the official config and state-dict names, logits against an independent implementation
of the published architecture, the shift to token-aligned rows done once (same loss and same samples as a
LLaDA-style model reading the same shifted logits), and the KV cache's spans."""

import glob
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from transformers import AutoModel, TrainingArguments

from llada_xdlm import DreamConfig, DreamModelLM, LLaDAOutput, generate
from llada_xdlm import cli
from llada_xdlm.evaluation.likelihood import nelbo_samples
from llada_xdlm.evaluation.lm_eval_model import XDLMEvalLM
from llada_xdlm.modeling import load_backbone
from llada_xdlm.training.args import DiffusionArguments
from llada_xdlm.training.trainer import XDLMTrainer

# Dream-org/Dream-v0-Base-7B's config.json, every key as published.
DREAM_7B_CONFIG = {
    "architectures": ["DreamModel"],
    "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "mask_token_id": 151666,
    "max_position_embeddings": 131072,
    "max_window_layers": 28,
    "model_type": "Dream",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "pad_token_id": 151643,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.2",
    "use_cache": False,
    "use_sliding_window": False,
    "vocab_size": 152064,
}


@pytest.fixture
def dream_config(tiny_tokenizer) -> DreamConfig:
    V = len(tiny_tokenizer)
    return DreamConfig(
        vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, rope_theta=10000.0,
        mask_token_id=tiny_tokenizer.mask_token_id, bos_token_id=tiny_tokenizer.bos_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id, pad_token_id=tiny_tokenizer.pad_token_id,
    )


@pytest.fixture
def dream(dream_config) -> DreamModelLM:
    torch.manual_seed(0)
    model = DreamModelLM(dream_config).float().eval()
    with torch.no_grad():  # random biases and norm weights, so a misplaced one shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in name else 0.0))
    return model


def reference_dream_logits(sd: dict, cfg: DreamConfig, ids: torch.Tensor, attention_mask: torch.Tensor | None):
    """Dream's published forward, written from the architecture (Qwen2: RMSNorm, q/k/v with biases, grouped-query
    attention, RoPE on positions that skip the left padding, SwiGLU), with attention both ways over the real
    tokens, then Dream's read-out: the prediction for position i is the head's output at i - 1, position 0 keeps
    its own."""
    B, L = ids.shape
    H, Hkv, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size
    hd = D // H
    am = torch.ones_like(ids) if attention_mask is None else attention_mask
    pos = am.cumsum(-1) - 1  # the first real token is position 0
    pos = pos.masked_fill(am == 0, 1)
    allowed = am.bool()[:, None, :, None] & am.bool()[:, None, None, :]  # [B, 1, L, L] real query x real key
    bias = torch.zeros(B, 1, L, L).masked_fill(~allowed, torch.finfo(torch.float32).min)
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, hd, 2).float() / hd)
    angles = pos[..., None].float() * inv_freq  # [B, L, hd / 2]
    cos = torch.cat([angles.cos(), angles.cos()], -1)[:, None]  # [B, 1, L, hd]
    sin = torch.cat([angles.sin(), angles.sin()], -1)[:, None]

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps))

    def rope(x):
        return x * cos + torch.cat([-x[..., hd // 2:], x[..., : hd // 2]], -1) * sin

    h = sd["model.embed_tokens.weight"][ids]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        a = rms(h, sd[p + "input_layernorm.weight"])
        q = (a @ sd[p + "self_attn.q_proj.weight"].T + sd[p + "self_attn.q_proj.bias"]).view(B, L, H, hd)
        k = (a @ sd[p + "self_attn.k_proj.weight"].T + sd[p + "self_attn.k_proj.bias"]).view(B, L, Hkv, hd)
        v = (a @ sd[p + "self_attn.v_proj.weight"].T + sd[p + "self_attn.v_proj.bias"]).view(B, L, Hkv, hd)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)  # head j reads kv j // g
        scores = rope(q) @ rope(k).transpose(-1, -2) / math.sqrt(hd) + bias
        o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, L, D)
        h = h + o @ sd[p + "self_attn.o_proj.weight"].T
        m = rms(h, sd[p + "post_attention_layernorm.weight"])
        h = h + (F.silu(m @ sd[p + "mlp.gate_proj.weight"].T) * (m @ sd[p + "mlp.up_proj.weight"].T)) @ sd[
            p + "mlp.down_proj.weight"].T
    logits = rms(h, sd["model.norm.weight"]) @ sd["lm_head.weight"].T
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


# ---- the official checkpoint's format ----------------------------------------------------------------------------


def test_official_config_json_builds_dream_7b():
    config = DreamConfig.from_dict(DREAM_7B_CONFIG)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads,
            config.intermediate_size, config.vocab_size) == (3584, 28, 28, 4, 18944, 152064)
    assert config.rope_theta == 1e6 and config.rms_norm_eps == 1e-6 and config.mask_token_id == 151666
    assert config.embedding_size == 152064 and config.max_sequence_length == 131072  # the shared names
    assert not config.tie_word_embeddings and config.head_dim == 128


def test_state_dict_names_are_the_official_checkpoints(dream, dream_config):
    per_layer = ["input_layernorm.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight",
                 "mlp.up_proj.weight", "mlp.down_proj.weight", "self_attn.o_proj.weight"]
    per_layer += [f"self_attn.{x}_proj.{w}" for x in "qkv" for w in ("weight", "bias")]
    want = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    want |= {f"model.layers.{i}.{name}" for i in range(dream_config.num_hidden_layers) for name in per_layer}
    assert set(dream.state_dict()) == want
    assert dream.model.layers[0].self_attn.k_proj.weight.shape == (2 * 16, 64)  # grouped-query: 2 kv heads of 16


@pytest.mark.parametrize("tie", [False, True])
def test_saved_checkpoint_loads_back_through_auto_model(dream, dream_config, tmp_path, tie):
    config = DreamConfig.from_dict({**dream_config.to_dict(), "tie_word_embeddings": tie})
    model = DreamModelLM(config).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is DreamModelLM and type(load_backbone(str(tmp_path))) is DreamModelLM
    assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) == tie
    ids = torch.randint(0, 300, (2, 9))
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_a_checkpoint_of_another_model_type_is_refused_naming_the_backbones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 64}))
    with pytest.raises(ValueError, match="model_type='qwen2'.*llada, lladamoe, Dream"):
        load_backbone(str(tmp_path))


def test_unsupported_official_options_are_refused():
    with pytest.raises(ValueError, match="use_sliding_window"):
        DreamConfig(use_sliding_window=True)
    with pytest.raises(ValueError, match="rope_scaling"):
        DreamConfig(rope_scaling={"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(ValueError, match="is_causal"):
        DreamModelLM(DreamConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1))(torch.zeros(1, 3, dtype=torch.long),
                                                                                is_causal=True)


# ---- logits against the reference ------------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_logits_equal_the_reference_implementation(dream, dream_config, attn_implementation):
    dream.config._attn_implementation = attn_implementation
    torch.manual_seed(1)
    ids = torch.randint(0, dream_config.vocab_size, (3, 12))
    with torch.no_grad():
        got = dream(ids).logits
        want = reference_dream_logits(dream.state_dict(), dream_config, ids, None)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_logits_with_left_padding_equal_the_reference_on_every_predicted_token(dream, dream_config):
    """Rows padded on the left by 0, 3 and 6 tokens: every row whose preceding position is a real token (the rows
    Dream's sampler and scorer read) equals the reference, which shifts the positions past the padding."""
    torch.manual_seed(2)
    ids = torch.randint(0, dream_config.vocab_size, (3, 12))
    am = torch.ones_like(ids)
    am[1, :3] = 0
    am[2, :6] = 0
    with torch.no_grad():
        got = dream(ids, attention_mask=am).logits
        want = reference_dream_logits(dream.state_dict(), dream_config, ids, am)
    predicted = torch.zeros_like(am, dtype=torch.bool)
    predicted[:, 1:] = am[:, :-1].bool()
    assert int(predicted.sum()) == 11 + 8 + 5
    torch.testing.assert_close(got[predicted], want[predicted], rtol=1e-5, atol=1e-5)


def test_logits_to_keep_and_last_hidden_state_are_token_aligned(dream):
    """logits_to_keep picks rows of the aligned logits, and the LM head on last_hidden_state gives them all (what
    the fused loss reads)."""
    ids = torch.randint(0, 300, (2, 10))
    with torch.no_grad():
        full = dream(ids)
        assert torch.equal(dream(ids, logits_to_keep=slice(4, 7)).logits, full.logits[:, 4:7])
        assert torch.equal(dream(ids, logits_to_keep=3).logits, full.logits[:, -3:])
        torch.testing.assert_close(dream.lm_head(full.last_hidden_state), full.logits)


def test_activation_checkpointing_checkpoints_every_layer_and_keeps_the_gradients(dream):
    dream.train()
    ids = torch.randint(0, 300, (2, 10))

    def grads():
        dream.zero_grad()
        dream(ids).logits.logsumexp(-1).sum().backward()
        return {n: p.grad.clone() for n, p in dream.named_parameters()}

    plain = grads()
    dream.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in dream.model.layers)
    checkpointed = grads()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-6, atol=1e-7)


# ---- the KV cache --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("span", [(5, 9), (5, 14), (0, 4)], ids=["dual", "prefix", "at-start"])
def test_span_against_a_fresh_cache_equals_the_full_forward(dream, dream_config, span):
    """A span run against the cache of the same canvas gives the full forward's rows, the span's first row
    included (it is read from the state of the position before the span, kept in the cache)."""
    start, end = span
    torch.manual_seed(3)
    ids = torch.randint(0, dream_config.vocab_size, (2, 14))
    am = torch.ones_like(ids)
    am[1, :2] = 0
    with torch.no_grad():
        full = dream(ids, attention_mask=am, use_cache=True)
        out = dream(ids[:, start:end], attention_mask=am, past_key_values=full.cache,
                    cache_position=torch.arange(start, end))
    torch.testing.assert_close(out.logits, full.logits[:, start:end], rtol=1e-5, atol=1e-5)


# ---- the shift, done once: same loss, same samples as a LLaDA-style model ------------------------------------


class NextTokenLogitsAsLLaDA(nn.Module):
    """A LLaDA-style model (row i of its logits predicts token i, no cache, no logits_to_keep) built on a Dream
    model's raw head output: the shift Dream's sampler applies, written here independently of the package."""

    def __init__(self, dream: DreamModelLM):
        super().__init__()
        self.dream, self.config = dream, dream.config

    def get_output_embeddings(self):
        return self.dream.lm_head

    def forward(self, input_ids, attention_mask=None, logits_to_keep=slice(None), loss_fn=None, **kwargs):
        raw = self.dream(input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states[-1]
        hidden = torch.cat([raw[:, :1], raw[:, :-1]], dim=1)
        if loss_fn is not None:  # the fused loss runs as the head's forward, inside the model's
            return LLaDAOutput(logits=None, loss=self.dream.lm_head(hidden, loss_fn=loss_fn), last_hidden_state=hidden)
        return LLaDAOutput(logits=self.dream.lm_head(hidden[:, logits_to_keep]), last_hidden_state=hidden)


@pytest.mark.parametrize("implementation", ["fused", "unfused"])
def test_dream_and_a_llada_style_model_on_the_same_shifted_logits_give_the_same_loss(
        dream, tiny_tokenizer, corpus_texts, tmp_path, implementation):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = XDLMTrainer(model=dream, args=args, mask_token_id=tiny_tokenizer.mask_token_id,
                          diffusion_args=DiffusionArguments(objective="xdlm", k1=0.3,
                                                            loss_implementation=implementation))
    ids = tiny_tokenizer(" ".join(corpus_texts), add_special_tokens=False)["input_ids"][: 4 * 32]
    clean = torch.tensor(ids).view(4, 32)
    batch = {"input_ids": clean, "labels": clean.clone()}
    with torch.no_grad():
        got, _ = trainer.per_token_loss(dream, batch, generator=torch.Generator().manual_seed(0))
        want, _ = trainer.per_token_loss(NextTokenLogitsAsLLaDA(dream), batch,
                                         generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert got.shape == (4 * 32,) and bool((got > 0).all())


@pytest.mark.parametrize("estimator", ["mdlm", "xdlm"])
def test_dream_and_a_llada_style_model_give_the_same_likelihood_samples(dream, estimator):
    torch.manual_seed(4)
    ids = torch.randint(0, 300, (2, 12))
    targets = torch.zeros_like(ids, dtype=torch.bool)
    targets[:, 5:] = True
    kw = dict(estimator=estimator, k1=0.2, mc_num=4, batch_size=4)
    got = nelbo_samples(dream, ids, targets, generator=torch.Generator().manual_seed(0), **kw)
    want = nelbo_samples(NextTokenLogitsAsLLaDA(dream), ids, targets, generator=torch.Generator().manual_seed(0), **kw)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("settings", [dict(k1=0.0), dict(k1=0.3, block_length=4)])
def test_generate_with_dream_equals_generate_with_a_llada_style_model(dream, tiny_tokenizer, settings):
    tiny_tokenizer.padding_side = "left"
    enc = tiny_tokenizer(["The quick brown fox", "A module"], return_tensors="pt", padding=True)
    kw = dict(steps=8, gen_length=16, temperature=0.0, **settings)
    dream.double()
    with torch.no_grad():
        got = generate(dream, enc.input_ids, enc.attention_mask, generator=torch.Generator().manual_seed(0), **kw)
        want = generate(NextTokenLogitsAsLLaDA(dream), enc.input_ids, enc.attention_mask,
                        generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(got, want)
    assert not bool((got == tiny_tokenizer.mask_token_id).any())


class DreamFreshCache(DreamModelLM):
    """Serves every cached span forward from a cache rebuilt from the current canvas (keys, values and final
    states copied into the sampler's cache), then runs the span as usual: exact, so the cached sampler must match
    the uncached one token for token at k1 = 0."""

    canvases: dict

    def forward(self, input_ids, attention_mask=None, past_key_values=None, cache_position=None, **kwargs):
        if past_key_values is None:
            out = super().forward(input_ids, attention_mask=attention_mask, **kwargs)
            if out.cache is not None:
                self.canvases[id(out.cache.hidden)] = input_ids.clone()
            return out
        canvas = self.canvases[id(past_key_values.hidden)]
        canvas[:, cache_position] = input_ids
        fresh = super().forward(canvas, attention_mask=attention_mask, use_cache=True).cache
        for (k, v), (fresh_k, fresh_v) in zip(past_key_values, fresh):
            k.copy_(fresh_k)
            v.copy_(fresh_v)
        past_key_values.hidden.copy_(fresh.hidden)
        return super().forward(input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                               cache_position=cache_position, **kwargs)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_generate_with_a_fresh_dream_kv_cache_equals_the_uncached_sampler(dream, dream_config, tiny_tokenizer,
                                                                          cache):
    """Spans read the keys and values of the rest, and the state of the position before them, from the cache."""
    fresh = DreamFreshCache(dream_config)
    fresh.canvases = {}
    fresh.load_state_dict(dream.state_dict())
    fresh, dream = fresh.double().eval(), dream.double()
    tiny_tokenizer.padding_side = "left"
    enc = tiny_tokenizer(["The quick brown fox", "A module"], return_tensors="pt", padding=True)
    kw = dict(steps=16, gen_length=16, block_length=4, k1=0.0, remasking="random")  # blocks start at any step
    with torch.no_grad():
        cached = generate(fresh, enc.input_ids, enc.attention_mask, cache=cache,
                          generator=torch.Generator().manual_seed(0), **kw)
        plain = generate(dream, enc.input_ids, enc.attention_mask, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(cached, plain)
    assert not bool((cached == tiny_tokenizer.mask_token_id).any())


# ---- the command-line jobs on a tiny random-weight Dream checkpoint ----------------------------------------------

REPO = Path(__file__).resolve().parents[1]
FIXTURE_TASKS = REPO / "tests" / "fixtures" / "eval_tasks"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_ALLOW_CODE_EVAL": "1"}


@pytest.fixture
def dream_checkpoint(dream, tiny_tokenizer, tmp_path) -> str:
    path = tmp_path / "tiny-dream"
    dream.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return str(path)


@pytest.mark.slow
def test_xdlm_train_continues_a_dream_checkpoint_with_the_xdlm_loss(dream_checkpoint, tmp_path):
    recipe = {"model_name_or_path": dream_checkpoint, "data_files": [str(REPO / "data/stdlib_docs/train.jsonl")],
              "block_size": 32, "objective": "xdlm", "k1": 0.1, "use_cpu": True, "seed": 0, "max_steps": 3,
              "per_device_train_batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1, "save_strategy": "no",
              "report_to": "none", "disable_tqdm": True, "output_dir": str(tmp_path / "out")}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert cli.main(["train", str(tmp_path / "recipe.yaml")]) == 0
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["model_type"] == "Dream" and saved["objective"] == "xdlm" and saved["k1"] == 0.1
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(x) and x > 0 for x in losses)
    before, after = load_backbone(dream_checkpoint), load_backbone(str(tmp_path / "out"))
    assert type(after) is DreamModelLM
    assert not torch.equal(before.lm_head.weight, after.lm_head.weight)  # it trained


def test_xdlm_sample_on_a_dream_checkpoint_prints_what_generate_gives(dream_checkpoint, dream, tiny_tokenizer,
                                                                      capsys):
    prompts = ["The module returns", "Open the file"]
    argv = ["sample", "--model", dream_checkpoint, "--prompt", prompts[0], "--prompt", prompts[1], "--steps", "8",
            "--gen_length", "16", "--k1", "0.3", "--cache", "dual", "--block_length", "8", "--seed", "3",
            "--device", "cpu"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    enc = tiny_tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        out = generate(dream, enc.input_ids, enc.attention_mask, steps=8, gen_length=16, k1=0.3, cache="dual",
                       block_length=8, eos_token_id=tiny_tokenizer.eos_token_id,
                       generator=torch.Generator().manual_seed(3))
    texts = tiny_tokenizer.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
    assert printed == [p + t for p, t in zip(prompts, texts)] and any(texts)


def test_lm_eval_model_loads_the_dream_checkpoint_and_its_mask_id(dream_checkpoint, dream, dream_config):
    lm = XDLMEvalLM(pretrained=dream_checkpoint, dtype="float32", device="cpu", max_length=64, gen_length=8)
    assert type(lm.model) is DreamModelLM and lm.mask_id == dream_config.mask_token_id
    loaded = lm.model.state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in dream.state_dict().items())


@pytest.mark.slow
def test_xdlm_eval_scores_a_dream_checkpoint_on_every_request_type(dream_checkpoint, tmp_path, monkeypatch):
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    tasks = ["xdlm_fixture_gsm8k", "xdlm_fixture_mc", "xdlm_fixture_rolling"]  # generate, loglikelihood, rolling
    args = "steps=4,gen_length=8,mc_num=4,batch_size=4,max_length=64,dtype=float32,device=cpu"
    cli.main(["eval", "--model", "xdlm", "--model_args", f"pretrained={dream_checkpoint},{args}", "--tasks",
              ",".join(tasks), "--include_path", str(FIXTURE_TASKS), "--output_path", str(tmp_path / "out")])
    (results_file,) = glob.glob(str(tmp_path / "out" / "**" / "results_*.json"), recursive=True)
    results = json.loads(Path(results_file).read_text())
    assert set(tasks) <= set(results["results"])
    assert results["config"]["model_args"]["pretrained"] == dream_checkpoint
    nll = results["results"]["xdlm_fixture_rolling"]
    assert all(math.isfinite(v) for k, v in nll.items() if "," in k and "stderr" not in k)


@pytest.mark.slow
def test_xdlm_paper_grid_runs_a_dream_checkpoint(dream_checkpoint, tmp_path):
    output = tmp_path / "grid"
    command = [sys.executable, "-m", "llada_xdlm", "paper-grid", "--output", str(output),
               "--model", f"dream={dream_checkpoint}:0.1", "--steps", "4", "--tasks", "xdlm_fixture_gsm8k",
               "--include_path", str(FIXTURE_TASKS),
               "--model_args", "gen_length=8,block_length=8,dtype=float32,max_length=256,device=cpu"]
    run = subprocess.run(command, env={**os.environ, **OFFLINE}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads((output / "cells" / "dream" / "steps4" / "xdlm_fixture_gsm8k.json").read_text())
    assert record["pretrained"] == dream_checkpoint and record["k1"] == 0.1 and 0.0 <= record["score"] <= 100.0
    assert record["tokens_per_forward"] == 8 / 4
    assert "| dream | 0.1 | 4 |" in (output / "grid.md").read_text()
