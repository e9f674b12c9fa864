"""The native LLaDA-MoE model against an independent reference written here from the published architecture
(OLMoE-style layers, q/k RMSNorm, softmax top-k routing without renormalisation, bidirectional attention), on a
random state dict saved under the official names; plus config loading, the LLaDA forward contract, and errors."""

import json

import pytest
import torch
from safetensors.torch import save_file

from llada_xdlm import LLaDAConfig, LLaDAMoEConfig, LLaDAMoEModelLM
from llada_xdlm.modeling import load_config, model_class

# The keys of the official configuration (configuration_lladamoe.py of inclusionAI/LLaDA-MoE-7B-A1B-Base, whose
# config.json names model_type "llada"), with LLaDA-MoE-7B-A1B's sizes.
OFFICIAL_CONFIG = {
    "architectures": ["LLaDAModelLM"],
    "auto_map": {
        "AutoConfig": "configuration_lladamoe.LLaDAConfig",
        "AutoModel": "modeling_lladamoe.LLaDAModelLM",
        "AutoModelForCausalLM": "modeling_lladamoe.LLaDAModelLM",
    },
    "model_type": "llada",
    "vocab_size": 157184,
    "hidden_size": 2048,
    "dense_intermediate_size": 8192,
    "expert_intermediate_size": 1024,
    "shared_expert_intermediate_size": None,
    "num_hidden_layers": 16,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "hidden_act": "silu",
    "max_position_embeddings": 8192,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-05,
    "use_cache": False,
    "pad_token_id": 156892,
    "eos_token_id": 156892,
    "tie_word_embeddings": False,
    "rope_theta": 50000,
    "partial_rotary_factor": 1.0,
    "rope_scaling": None,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "clip_qkv": None,
    "num_experts_per_tok": 8,
    "num_experts": 64,
    "output_router_logits": False,
    "router_aux_loss_coef": 0.01,
    "norm_topk_prob": False,
    "qk_layernorm": True,
    "moe_layer_freq": [1] * 16,
    "moe_router_enable_expert_bias": False,
    "moe_router_score_function": "softmax",
    "routed_scaling_factor": 1,
    "router_num_group": None,
    "router_topk_group": None,
    "torch_dtype": "bfloat16",
}

# A tiny instance: a dense first layer, a mixture of experts (with a shared expert and an expert bias) second,
# grouped-query attention and RoPE on half of each head.
TINY = dict(
    OFFICIAL_CONFIG,
    vocab_size=97, hidden_size=32, dense_intermediate_size=48, expert_intermediate_size=16,
    shared_expert_intermediate_size=24, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=64, rope_theta=10000.0, partial_rotary_factor=0.5, num_experts=6, num_experts_per_tok=2,
    moe_layer_freq=[0, 1], moe_router_enable_expert_bias=True, pad_token_id=95, eos_token_id=95, mask_token_id=96,
)


def official_state_dict(c: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the official checkpoint's names, shaped by the config c (no model class involved)."""
    g = torch.Generator().manual_seed(seed)
    D, d = c["hidden_size"], c["hidden_size"] // c["num_attention_heads"]
    H_kv = c["num_key_value_heads"]

    def w(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    def mlp(prefix, width):
        return {f"{prefix}.gate_proj.weight": w(width, D), f"{prefix}.up_proj.weight": w(width, D),
                f"{prefix}.down_proj.weight": w(D, width)}

    sd = {"model.embed_tokens.weight": w(c["vocab_size"], D, scale=1.0), "model.norm.weight": 1 + w(D),
          "lm_head.weight": w(c["vocab_size"], D)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        sd |= {f"{p}.input_layernorm.weight": 1 + w(D), f"{p}.post_attention_layernorm.weight": 1 + w(D),
               f"{p}.self_attn.q_proj.weight": w(D, D), f"{p}.self_attn.k_proj.weight": w(H_kv * d, D),
               f"{p}.self_attn.v_proj.weight": w(H_kv * d, D), f"{p}.self_attn.o_proj.weight": w(D, D),
               f"{p}.self_attn.q_norm.weight": 1 + w(d), f"{p}.self_attn.k_norm.weight": 1 + w(d)}
        if c["moe_layer_freq"][i]:
            sd[f"{p}.mlp.gate.weight"] = w(c["num_experts"], D, scale=1.0)
            sd[f"{p}.mlp.expert_bias"] = w(c["num_experts"], scale=0.1)
            for e in range(c["num_experts"]):
                sd |= mlp(f"{p}.mlp.experts.{e}", c["expert_intermediate_size"])
            sd |= mlp(f"{p}.shared_expert", c["shared_expert_intermediate_size"])
        else:
            sd |= mlp(f"{p}.mlp", c["dense_intermediate_size"])
    return sd


def reference_logits(sd: dict, c: dict, ids: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
    """LLaDA-MoE's forward written out token by token from the architecture (float32): pre-norm layers, RMSNorm,
    per-head q/k RMSNorm, RoPE (rotate-half layout) on the first partial_rotary_factor of each head, softmax attention
    over all unpadded keys (both directions), then per token: router softmax, (+ expert bias), the k largest, the
    sum of those experts' SwiGLU outputs weighted by their raw probabilities, plus the shared expert."""
    B, L = ids.shape
    D, H, H_kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    d = D // H
    r = int(d * c["partial_rotary_factor"])
    eps = c["rms_norm_eps"]

    def rms(x, weight):
        return weight * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))

    def swiglu(x, prefix):
        gate, up, down = (sd[f"{prefix}.{n}_proj.weight"] for n in ("gate", "up", "down"))
        a = x @ gate.T
        return (a * torch.sigmoid(a) * (x @ up.T)) @ down.T

    pos = torch.arange(L, dtype=torch.float64)
    angle = pos[:, None] * c["rope_theta"] ** (-torch.arange(0, r, 2, dtype=torch.float64) / r)  # [L, r/2]
    cos, sin = angle.cos().float(), angle.sin().float()

    def rope(x):  # x [L, d]: pairs (i, i + r/2) of the first r dims rotate by angle[:, i]
        a, b = x[:, : r // 2], x[:, r // 2 : r]
        return torch.cat([a * cos - b * sin, b * cos + a * sin, x[:, r:]], dim=-1)

    out = torch.empty(B, L, c["vocab_size"])
    for bi in range(B):
        keys = torch.ones(L, dtype=torch.bool) if pad is None else pad[bi].bool()
        x = sd["model.embed_tokens.weight"][ids[bi]]  # [L, D]
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}"
            n = rms(x, sd[f"{p}.input_layernorm.weight"])
            q = (n @ sd[f"{p}.self_attn.q_proj.weight"].T).view(L, H, d)
            k = (n @ sd[f"{p}.self_attn.k_proj.weight"].T).view(L, H_kv, d)
            v = (n @ sd[f"{p}.self_attn.v_proj.weight"].T).view(L, H_kv, d)
            q, k = rms(q, sd[f"{p}.self_attn.q_norm.weight"]), rms(k, sd[f"{p}.self_attn.k_norm.weight"])
            heads = []
            for h in range(H):
                hk = h // (H // H_kv)
                scores = rope(q[:, h]) @ rope(k[:, hk]).T / d**0.5  # [L, L]
                scores = scores.masked_fill(~keys[None, :], float("-inf"))
                heads.append(torch.softmax(scores, dim=-1) @ v[:, hk])
            x = x + torch.cat(heads, dim=-1) @ sd[f"{p}.self_attn.o_proj.weight"].T
            m = rms(x, sd[f"{p}.post_attention_layernorm.weight"])
            if not c["moe_layer_freq"][i]:
                x = x + swiglu(m, f"{p}.mlp")
                continue
            mixed = torch.zeros_like(m)
            for t in range(L):
                prob = torch.softmax(m[t] @ sd[f"{p}.mlp.gate.weight"].T, dim=-1) + sd[f"{p}.mlp.expert_bias"]
                for e in prob.argsort(descending=True)[: c["num_experts_per_tok"]].tolist():
                    mixed[t] += prob[e] * swiglu(m[t : t + 1], f"{p}.mlp.experts.{e}")[0]
            x = x + mixed + swiglu(m, f"{p}.shared_expert")
        out[bi] = rms(x, sd["model.norm.weight"]) @ sd["lm_head.weight"].T
    return out


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory):
    """(folder, state dict): a tiny checkpoint as the official repository lays it out (config.json with model_type
    "llada" and the official keys, model.safetensors with the official names)."""
    path = tmp_path_factory.mktemp("llada-moe-official")
    (path / "config.json").write_text(json.dumps(TINY))
    sd = official_state_dict(TINY)
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path, sd


@pytest.fixture(scope="module")
def loaded(official_checkpoint):
    path, _ = official_checkpoint
    config = load_config(str(path))
    model, info = model_class(config).from_pretrained(path, config=config, dtype=torch.float32,
                                                      output_loading_info=True)
    return model.eval(), info


def test_official_config_loads_as_llada_moe_with_its_keys_and_llada_aliases(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(OFFICIAL_CONFIG))
    config = load_config(str(tmp_path))
    assert isinstance(config, LLaDAMoEConfig)
    assert (config.n_layers, config.d_model, config.n_heads, config.max_sequence_length) == (16, 2048, 16, 8192)
    assert (config.num_experts, config.num_experts_per_tok, config.embedding_size) == (64, 8, 157184)
    assert config.mask_token_id == 156895 and config.qk_layernorm and config.head_dim == 128


def test_official_names_load_with_no_missing_or_unexpected_weights(loaded, official_checkpoint):
    model, info = loaded
    _, sd = official_checkpoint
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert set(model.state_dict()) == set(sd)
    for name, tensor in sd.items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_logits_equal_the_reference_architecture(loaded, official_checkpoint):
    model, _ = loaded
    _, sd = official_checkpoint
    ids = torch.randint(0, 95, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids).logits
    torch.testing.assert_close(logits, reference_logits(sd, TINY, ids), atol=1e-4, rtol=1e-4)


def test_padded_logits_equal_the_reference_and_the_row_alone(loaded, official_checkpoint):
    model, _ = loaded
    _, sd = official_checkpoint
    ids = torch.randint(0, 95, (2, 12), generator=torch.Generator().manual_seed(2))
    pad = torch.ones(2, 12, dtype=torch.long)
    pad[0, :4] = 0  # row 0 left-padded by 4
    with torch.no_grad():
        logits = model(ids, attention_mask=pad).logits
        alone = model(ids[:1, 4:]).logits
    torch.testing.assert_close(logits, reference_logits(sd, TINY, ids, pad), atol=1e-4, rtol=1e-4)
    # RoPE is relative, so the padded row's real tokens score as the row alone.
    torch.testing.assert_close(logits[0, 4:], alone[0], atol=1e-4, rtol=1e-4)


def test_forward_contract_logits_to_keep_fused_head_hidden_states_and_kv_cache(loaded):
    model, _ = loaded
    ids = torch.randint(0, 95, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(ids, output_hidden_states=True)
        assert len(full.hidden_states) == TINY["num_hidden_layers"] + 1
        torch.testing.assert_close(model(ids, logits_to_keep=slice(8, None)).logits, full.logits[:, 8:])
        hidden = model(ids, compute_logits=False)
        assert hidden.logits is None
        torch.testing.assert_close(model.get_output_embeddings()(hidden.last_hidden_state), full.logits)
        # A span [6, 10) run against the cache of the whole sequence scores as in the full forward.
        cache = model(ids, use_cache=True).cache
        span = model(ids[:, 6:10], past_key_values=cache, cache_position=torch.arange(6, 10)).logits
    torch.testing.assert_close(span, full.logits[:, 6:10], atol=1e-5, rtol=1e-5)


def test_saved_checkpoint_reloads_as_llada_moe(loaded, tmp_path):
    model, _ = loaded
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "lladamoe"
    config = load_config(str(tmp_path))
    again = model_class(config).from_pretrained(tmp_path)
    ids = torch.randint(0, 95, (1, 8), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits)


def test_llada_config_refuses_a_llada_moe_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(OFFICIAL_CONFIG))
    with pytest.raises(ValueError, match="LLaDA-MoE.*LLaDAMoEConfig"):
        LLaDAConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"moe_layer_freq": [1] * 3}, "moe_layer_freq has 3 entries"),
    ({"num_experts_per_tok": 65}, "num_experts_per_tok=65"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
    ({"tie_word_embeddings": True}, "tie_word_embeddings"),
    ({"hidden_size": 2050}, "not divisible"),
])
def test_config_refuses_what_would_build_another_model(change, message):
    keys = {k: v for k, v in OFFICIAL_CONFIG.items() if k not in ("architectures", "auto_map", "model_type")}
    with pytest.raises(ValueError, match=message):
        LLaDAMoEConfig(**{**keys, **change})


def test_bad_input_ids_are_refused(loaded):
    model, _ = loaded
    with pytest.raises(ValueError, match="outside \\[0, 97\\)"):
        model(torch.tensor([[1, 97]]))
    assert isinstance(model, LLaDAMoEModelLM)


def test_gradient_checkpointing_gives_the_same_gradients(loaded):
    model, _ = loaded
    model = LLaDAMoEModelLM(model.config).float().train()  # a fresh copy: the module-scoped model stays as it is
    ids = torch.randint(0, 95, (2, 10), generator=torch.Generator().manual_seed(5))

    def grads():
        model.zero_grad()
        model(ids).logits.logsumexp(-1).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.model.layers)
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and any(".experts." in n for n in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-6, atol=1e-7)


def test_init_zeroes_the_pad_embedding_and_uses_initializer_range(loaded):
    model, _ = loaded
    config = LLaDAMoEConfig.from_dict({**model.config.to_dict(), "initializer_range": 0.05})
    torch.manual_seed(0)
    fresh = LLaDAMoEModelLM(config)
    assert torch.all(fresh.model.embed_tokens.weight[config.pad_token_id] == 0)
    assert abs(fresh.model.layers[1].mlp.experts[0].up_proj.weight.std().item() - 0.05) < 0.01
    assert torch.all(fresh.model.layers[1].mlp.expert_bias == 0) and torch.all(fresh.model.norm.weight == 1)
