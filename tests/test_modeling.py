"""The native LLaDA model: official config and state dict, golden forward, padding, Hub round-trip, errors."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from llada_xdlm import LLaDAConfig, LLaDAModelLM

# config.json of GSAI-ML/LLaDA-8B-Base (Base and Instruct are identical), as published.
OFFICIAL_CONFIG = {
    "activation_type": "silu",
    "alibi": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        "AutoModel": "modeling_llada.LLaDAModelLM",
    },
    "bias_for_layer_norm": False,
    "block_group_size": 1,
    "block_type": "llama",
    "d_model": 4096,
    "embedding_dropout": 0.0,
    "embedding_size": 126464,
    "eos_token_id": 126081,
    "flash_attention": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "init_cutoff_factor": None,
    "init_device": "meta",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "input_emb_norm": False,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "mask_token_id": 126336,
    "max_sequence_length": 4096,
    "mlp_hidden_size": 12288,
    "mlp_ratio": 4,
    "model_type": "llada",
    "multi_query_attention": None,
    "n_heads": 32,
    "n_kv_heads": 32,
    "n_layers": 32,
    "pad_token_id": 126081,
    "precision": "amp_bf16",
    "residual_dropout": 0.0,
    "rms_norm_eps": 1e-05,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": 500000.0,
    "scale_logits": False,
    "transformers_version": "4.46.3",
    "use_cache": False,
    "vocab_size": 126464,
    "weight_tying": False,
}


def official_config(tmp_path) -> LLaDAConfig:
    (tmp_path / "config.json").write_text(json.dumps(OFFICIAL_CONFIG))
    return LLaDAConfig.from_pretrained(tmp_path)


def test_official_config_loads_with_every_key_and_hf_aliases(tmp_path):
    config = official_config(tmp_path)
    assert (config.hidden_size, config.num_attention_heads, config.num_key_value_heads) == (4096, 32, 32)
    assert (config.num_hidden_layers, config.intermediate_size, config.max_position_embeddings) == (32, 12288, 4096)
    assert config.rope_theta == 500000.0 and config.mask_token_id == 126336
    assert config.eos_token_id == config.pad_token_id == 126081
    # OLMo-era keys we do not use are kept, not rejected, and survive a save.
    assert config.init_fn == "mitchell" and config.alibi_bias_max == 8.0 and config.precision == "amp_bf16"
    config.save_pretrained(tmp_path / "resaved")
    resaved = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert resaved["init_fn"] == "mitchell" and resaved["d_model"] == 4096


def test_default_config_is_llada_8b_not_another_model():
    config = LLaDAConfig()
    for key in ["d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "vocab_size", "embedding_size",
                "max_sequence_length", "rope_theta", "mask_token_id", "eos_token_id", "pad_token_id"]:
        assert getattr(config, key) == OFFICIAL_CONFIG[key], key


def test_meta_device_8b_model_has_official_parameter_count_and_state_dict(tmp_path):
    config = official_config(tmp_path)
    with torch.device("meta"):
        model = LLaDAModelLM(config)
    assert sum(p.numel() for p in model.parameters()) == 8_015_581_184
    state = model.state_dict()
    assert len(state) == 291
    expected = {
        "model.transformer.wte.weight": (126464, 4096),
        "model.transformer.ln_f.weight": (4096,),
        "model.transformer.ff_out.weight": (126464, 4096),
    }
    for i in range(32):
        p = f"model.transformer.blocks.{i}."
        expected |= {p + "attn_norm.weight": (4096,), p + "ff_norm.weight": (4096,)}
        expected |= {p + f"{n}.weight": (4096, 4096) for n in ["q_proj", "k_proj", "v_proj", "attn_out"]}
        expected |= {p + "ff_proj.weight": (12288, 4096), p + "up_proj.weight": (12288, 4096)}
        expected |= {p + "ff_out.weight": (4096, 12288)}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected


# --- an independent reference forward, written from the architecture's formulas (docs/model.md) ----------------


def reference_forward(model: LLaDAModelLM, ids: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    cfg = model.config
    sd = {k.removeprefix("model.transformer."): v.double() for k, v in model.state_dict().items()}
    H, Hkv, D = cfg.n_heads, cfg.n_kv_heads, cfg.d_model
    d = D // H
    B, L = ids.shape

    def rms(x, w):
        return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.rms_norm_eps)

    def rope(x):  # x [B, L, heads, d]: pair dim i with dim i + d/2, rotate by angle pos * theta^(-2i/d)
        out = x.clone()
        for pos in range(L):
            for i in range(d // 2):
                angle = pos * cfg.rope_theta ** (-2 * i / d)
                a, b = x[:, pos, :, i], x[:, pos, :, i + d // 2]
                out[:, pos, :, i] = a * math.cos(angle) - b * math.sin(angle)
                out[:, pos, :, i + d // 2] = b * math.cos(angle) + a * math.sin(angle)
        return out

    x = sd["wte.weight"][ids]
    for i in range(cfg.n_layers):
        w = {k.removeprefix(f"blocks.{i}."): v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        n = rms(x, w["attn_norm.weight"])
        q = rope((n @ w["q_proj.weight"].T).view(B, L, H, d))
        k = rope((n @ w["k_proj.weight"].T).view(B, L, Hkv, d)).repeat_interleave(H // Hkv, dim=2)
        v = (n @ w["v_proj.weight"].T).view(B, L, Hkv, d).repeat_interleave(H // Hkv, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask.bool()[:, None, None, :], float("-inf"))
        att = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(B, L, D)
        h = x + att @ w["attn_out.weight"].T
        m = rms(h, w["ff_norm.weight"])
        gate, up = m @ w["ff_proj.weight"].T, m @ w["up_proj.weight"].T
        x = h + (gate * torch.sigmoid(gate) * up) @ w["ff_out.weight"].T
    return rms(x, sd["ln_f.weight"]) @ sd["ff_out.weight"].T


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_forward_matches_independent_reference_in_float32(tiny_config, n_kv_heads):
    tiny_config.n_kv_heads = n_kv_heads
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config).eval()
    ids = torch.randint(0, tiny_config.vocab_size, (2, 12))
    with torch.no_grad():
        ours = model(ids).logits
    ref = reference_forward(model, ids)
    torch.testing.assert_close(ours.double(), ref, rtol=0, atol=1e-5)


def test_sdpa_and_eager_attention_agree_with_and_without_padding(tiny_config):
    torch.manual_seed(0)
    sdpa = LLaDAModelLM(tiny_config).eval()
    eager = LLaDAModelLM.from_pretrained(None, config=tiny_config, state_dict=sdpa.state_dict(),
                                         attn_implementation="eager").eval()
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    ids = torch.randint(0, tiny_config.vocab_size, (2, 10))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        for m in [None, mask]:
            torch.testing.assert_close(sdpa(ids, attention_mask=m).logits, eager(ids, attention_mask=m).logits,
                                       rtol=1e-5, atol=1e-5)


def test_attention_is_bidirectional_unless_causal_is_asked(tiny_model, tiny_config):
    ids = torch.randint(0, tiny_config.vocab_size, (1, 10))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % tiny_config.vocab_size
    with torch.no_grad():
        # A later token changes the logits of the first position: no silent causal mask.
        assert not torch.allclose(tiny_model(ids).logits[0, 0], tiny_model(changed).logits[0, 0])
        # With is_causal=True it does not.
        torch.testing.assert_close(tiny_model(ids, is_causal=True).logits[0, :-1],
                                   tiny_model(changed, is_causal=True).logits[0, :-1])


def test_left_padded_row_has_the_same_logits_as_unpadded(tiny_model, tiny_config):
    ids = torch.randint(3, tiny_config.vocab_size, (1, 9))
    pad = tiny_config.pad_token_id
    padded = torch.cat([torch.full((1, 4), pad), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], dim=1)
    batch = torch.cat([padded, torch.randint(3, tiny_config.vocab_size, (1, 13))])
    batch_mask = torch.cat([mask, torch.ones(1, 13, dtype=torch.long)])
    with torch.no_grad():
        alone = tiny_model(ids).logits[0]
        in_batch = tiny_model(batch, attention_mask=batch_mask).logits[0, 4:]
    torch.testing.assert_close(in_batch, alone, rtol=1e-5, atol=1e-5)
    ref = reference_forward(tiny_model, padded, key_mask=mask)[0, 4:]
    torch.testing.assert_close(in_batch.double(), ref, rtol=0, atol=1e-5)


def test_last_hidden_state_is_what_the_lm_head_reads(tiny_model, tiny_config):
    ids = torch.randint(0, tiny_config.vocab_size, (2, 7))
    with torch.no_grad():
        full = tiny_model(ids, output_hidden_states=True)
        hidden_only = tiny_model(ids, compute_logits=False)
    assert hidden_only.logits is None
    assert len(full.hidden_states) == tiny_config.n_layers + 1
    head = tiny_model.get_output_embeddings()
    torch.testing.assert_close(head(hidden_only.last_hidden_state), full.logits)


def test_save_and_load_through_auto_classes_gives_identical_logits(tiny_model, tiny_config, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    # A local save is plain: remote code is for Hub staging (test_hub.py), or every AutoTokenizer load asks for trust.
    assert "auto_map" not in saved and not list(tmp_path.glob("*.py"))
    assert isinstance(AutoConfig.from_pretrained(tmp_path), LLaDAConfig)
    ids = torch.randint(0, tiny_config.vocab_size, (2, 8))
    for auto in [AutoModel, AutoModelForCausalLM]:
        loaded = auto.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, LLaDAModelLM)
        with torch.no_grad():
            assert torch.equal(loaded(ids).logits, tiny_model(ids).logits)
    bf16 = AutoModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())


def test_a_saved_checkpoint_loads_its_tokenizer_without_asking_to_trust_remote_code(tiny_model, tiny_tokenizer,
                                                                                    tmp_path):
    """AutoTokenizer reads config.json first; with auto_map there, a process without this package stops at
    transformers' "Do you wish to run the custom code? [y/N]" prompt (15 s, then a fallback). The prompt goes
    through input(), replaced here by one that records the call."""
    tiny_model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    script = textwrap.dedent(f"""
        import builtins, sys
        sys.modules["llada_xdlm"] = None  # a fresh interpreter: nothing of ours registered
        def refuse(prompt=""):
            print("PROMPTED:", prompt)
            raise EOFError
        builtins.input = refuse
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained({str(tmp_path / "model")!r})
        print("MASK", tokenizer.mask_token_id)
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PROMPTED" not in done.stdout
    assert f"MASK {tiny_tokenizer.mask_token_id}" in done.stdout


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config):
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config).train()
    ids = torch.randint(0, tiny_config.vocab_size, (2, 10))

    def grads():
        model.zero_grad()
        model(ids).logits.float().logsumexp(-1).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.activation_checkpointing_enable()
    assert all(block.gradient_checkpointing for block in model.model.transformer.blocks)
    checkpointed = grads()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-6, atol=1e-7)


def test_init_weights_use_init_std(tiny_config):
    tiny_config.init_std = 0.05
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config)
    assert abs(model.model.transformer.wte.weight.std().item() - 0.05) < 0.005
    assert abs(model.model.transformer.blocks[0].q_proj.weight.std().item() - 0.05) < 0.005
    assert torch.all(model.model.transformer.ln_f.weight == 1)


def test_head_count_not_dividing_d_model_is_rejected():
    with pytest.raises(ValueError, match=r"d_model=100 is not divisible by n_heads=3"):
        LLaDAConfig(d_model=100, n_heads=3, n_kv_heads=3)
    with pytest.raises(ValueError, match=r"n_heads=4 is not divisible by n_kv_heads=3"):
        LLaDAConfig(d_model=64, n_heads=4, n_kv_heads=3)


def test_unsupported_olmo_options_are_rejected_not_ignored():
    with pytest.raises(ValueError, match="weight_tying=True is not supported"):
        LLaDAConfig(weight_tying=True)


def test_bad_attention_mask_shape_is_rejected(tiny_model, tiny_config):
    ids = torch.randint(0, tiny_config.vocab_size, (2, 8))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 7\) but input_ids has \(2, 8\)"):
        tiny_model(ids, attention_mask=torch.ones(2, 7, dtype=torch.long))


def test_token_ids_outside_the_vocabulary_are_rejected(tiny_model, tiny_config):
    V = tiny_config.embedding_size
    ids = torch.tensor([[1, 2, V]])
    with pytest.raises(ValueError, match=rf"token id {V}, outside \[0, {V}\)"):
        tiny_model(ids)


# --- KV cache for a span, logits_to_keep, hidden states and attention_bias as the official code --------------------


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("n_kv_heads", [4, 2])
@pytest.mark.parametrize("span", [(9, 16), (9, 12), (0, 16), (15, 16)])  # tail ("prefix"), inside ("dual"), all, 1
def test_span_forward_with_a_fresh_cache_equals_the_full_forward(tiny_config, attn, n_kv_heads, span):
    tiny_config.n_kv_heads = n_kv_heads
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config).double().eval()
    model.config._attn_implementation = attn
    ids = torch.randint(0, tiny_config.vocab_size, (2, 16))
    am = torch.ones(2, 16, dtype=torch.long)
    am[1, :5] = 0  # a left-padded row
    s, e = span
    with torch.no_grad():  # the full forward is checked against reference_forward above
        full = model(ids, attention_mask=am, use_cache=True)
        assert len(full.cache) == tiny_config.n_layers and full.cache[0][0].shape == (2, n_kv_heads, 16, 16)
        # the cache of a span forward is the full forward's cache with the span rewritten: start from a stale one
        stale = tuple((torch.randn_like(k), torch.randn_like(v)) for k, v in full.cache)
        for (k, v), (fk, fv) in zip(stale, full.cache):
            k[:, :, :s], v[:, :, :s], k[:, :, e:], v[:, :, e:] = fk[:, :, :s], fv[:, :, :s], fk[:, :, e:], fv[:, :, e:]
        out = model(ids[:, s:e], attention_mask=am, past_key_values=stale, cache_position=torch.arange(s, e),
                    use_cache=True)
    torch.testing.assert_close(out.logits, full.logits[:, s:e], rtol=0, atol=1e-12)
    for (k, v), (fk, fv) in zip(out.cache, full.cache):
        torch.testing.assert_close(k, fk, rtol=0, atol=1e-12)
        torch.testing.assert_close(v, fv, rtol=0, atol=1e-12)


def test_appending_after_a_cache_as_the_official_interface(tiny_model, tiny_config):
    """Without cache_position the input continues the cached sequence (official past_key_values semantics)."""
    ids = torch.randint(0, tiny_config.vocab_size, (2, 12))
    with torch.no_grad():
        full = tiny_model(ids, use_cache=True)
        prefix = tuple((k[:, :, :7], v[:, :, :7]) for k, v in full.cache)  # keys of positions 0..6
        out = tiny_model(ids[:, 7:], past_key_values=prefix, use_cache=True)
    torch.testing.assert_close(out.logits, full.logits[:, 7:], rtol=1e-5, atol=1e-5)
    assert out.cache[0][0].shape[2] == 12
    assert tiny_model(ids).cache is None  # nothing is kept unless asked for


def test_logits_to_keep_equals_the_sliced_full_logits(tiny_model, tiny_config):
    ids = torch.randint(0, tiny_config.vocab_size, (2, 10))
    with torch.no_grad():
        full = tiny_model(ids).logits
        for keep, expected in [(0, full), (3, full[:, 7:]), (slice(2, 5), full[:, 2:5]),
                               (torch.tensor([1, 4, 9]), full[:, [1, 4, 9]])]:
            torch.testing.assert_close(tiny_model(ids, logits_to_keep=keep).logits, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="logits_to_keep=-1 must be >= 0"):
        tiny_model(ids, logits_to_keep=-1)


def test_hidden_states_are_block_inputs_then_the_ln_f_output_as_the_official_code(tiny_model, tiny_config):
    ids = torch.randint(0, tiny_config.vocab_size, (2, 7))
    t = tiny_model.model.transformer
    seen = []
    hooks = [block.register_forward_pre_hook(lambda mod, args: seen.append(args[0])) for block in t.blocks]
    hooks.append(t.ln_f.register_forward_hook(lambda mod, args, out: seen.append(out)))
    with torch.no_grad():
        out = tiny_model(ids, output_hidden_states=True)
    for h in hooks:
        h.remove()
    # official LLaDA: (embeddings, input of block 1, ..., input of block n - 1, ln_f(output of the last block))
    assert len(out.hidden_states) == tiny_config.n_layers + 1 == len(seen)
    for ours, expected in zip(out.hidden_states, seen):
        assert torch.equal(ours, expected)
    torch.testing.assert_close(tiny_model.get_output_embeddings()(out.hidden_states[-1]), out.logits)


def test_attention_bias_is_refused_not_ignored(tiny_model, tiny_config):
    ids = torch.randint(0, tiny_config.vocab_size, (1, 6))
    with pytest.raises(ValueError, match="attention_bias is not supported"):
        tiny_model(ids, attention_bias=torch.zeros(1, 1, 6, 6))


def test_bad_cache_arguments_are_rejected(tiny_model, tiny_config):
    ids = torch.randint(0, tiny_config.vocab_size, (2, 10))
    with torch.no_grad():
        cache = tiny_model(ids, use_cache=True).cache
        with pytest.raises(ValueError, match="consecutive positions"):
            tiny_model(ids[:, :3], past_key_values=cache, cache_position=torch.tensor([2, 4, 5]))
        with pytest.raises(ValueError, match=r"positions \[8, 11\) must lie inside the cache of 10"):
            tiny_model(ids[:, :3], past_key_values=cache, cache_position=torch.arange(8, 11))
        with pytest.raises(ValueError, match=r"the keys \(cache and input\) need \(2, 10\)"):
            tiny_model(ids[:, :3], attention_mask=torch.ones(2, 3), past_key_values=cache,
                       cache_position=torch.arange(3))
        with pytest.raises(ValueError, match="is_causal=True cannot be combined with past_key_values"):
            tiny_model(ids[:, :3], past_key_values=cache, cache_position=torch.arange(3), is_causal=True)
        with pytest.raises(ValueError, match="for each of the 2 layers with batch size 1"):
            tiny_model(ids[:1, :3], past_key_values=cache, cache_position=torch.arange(3))
        with pytest.raises(ValueError, match="exceeds max_sequence_length=256"):
            tiny_model(ids[:, :3], cache_position=torch.arange(254, 257))


def test_flash_refuses_a_span_padded_unlike_the_last_columns(tiny_model, tiny_config):
    """flash-attn takes the queries' padding from the last columns of the mask; a span padded otherwise would be
    misaligned, so it is refused before any attention runs (flash-attn need not be installed for this check)."""
    ids = torch.randint(0, tiny_config.vocab_size, (2, 10))
    am = torch.ones(2, 10, dtype=torch.long)
    am[1, :4] = 0
    with torch.no_grad():
        cache = tiny_model(ids, attention_mask=am, use_cache=True).cache
    tiny_model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="attn_implementation='sdpa'"):
        tiny_model(ids[:, 2:5], attention_mask=am, past_key_values=cache, cache_position=torch.arange(2, 5))


SIZE_KEYS = {"d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size", "vocab_size", "embedding_size",
             "max_sequence_length", "rope_theta", "mask_token_id", "eos_token_id", "pad_token_id", "architectures",
             "auto_map", "transformers_version"}


def test_config_built_from_scratch_saves_every_official_key_with_llada_8b_values(tmp_path):
    """The official LLaDAConfig fills missing keys with its own class defaults (dropouts 0.1, init_fn "normal"): a
    small model built here must write LLaDA-8B's values for every key, so the official code rebuilds the same model."""
    config = LLaDAConfig(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=100, embedding_size=100,
                         max_sequence_length=32, mask_token_id=99, eos_token_id=98, pad_token_id=98)
    LLaDAModelLM(config).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    missing = sorted(set(OFFICIAL_CONFIG) - set(saved) - {"auto_map"})
    assert not missing, f"official keys not written: {missing}"
    for key in set(OFFICIAL_CONFIG) - SIZE_KEYS:
        assert saved[key] == OFFICIAL_CONFIG[key], key


@pytest.mark.parametrize("key, value", [("attention_dropout", 0.1), ("residual_dropout", 0.1),
                                        ("embedding_dropout", 0.1), ("alibi", True), ("include_qkv_bias", True),
                                        ("layer_norm_with_affine", False), ("multi_query_attention", True)])
def test_official_options_that_change_the_model_are_refused(key, value):
    with pytest.raises(ValueError, match=f"{key}={value!r} is not supported"):
        LLaDAConfig(**{key: value})
