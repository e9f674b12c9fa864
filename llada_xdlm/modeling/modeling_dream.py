"""Dream: a bidirectional Qwen2 transformer whose prediction for position i is read at position i - 1.

Module tree and state-dict names are exactly those of the official Dream-org/Dream-v0-Base-7B checkpoint
(model.{embed_tokens, layers.{i}.{input_layernorm, self_attn.{q_proj, k_proj, v_proj, o_proj},
post_attention_layernorm, mlp.{gate_proj, up_proj, down_proj}}, norm}, lm_head), so its safetensors load unchanged.
Qwen2's layout: biases on q, k, v only, grouped-query attention, RoPE on all head dims, RMSNorm.

Dream was initialised from an autoregressive model and keeps its habit: the LM head at position i - 1 predicts the
token at position i (position 0 predicts itself). This model hands out what every backbone of this package hands
out, rows aligned with the tokens they predict (`last_hidden_state[:, i]` and `logits[:, i]` are about token i):
the shift happens once, in `shift_to_targets`, on the hidden states before the LM head. A span run against a KV
cache reads the state of the position before it from the cache, as it reads the keys and values of the rest.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_dream import DreamConfig
from .modeling_llada import (
    KVCache,
    LLaDALMHead,
    LLaDAOutput,
    LLaDARMSNorm,
    apply_rotary,
    cache_span,
    check_input_ids,
    eager_attention_forward,
    padding_mask,
    rotary_cos_sin,
    span_attention_mask,
    write_span,
)


def shift_to_targets(hidden: torch.Tensor, before: torch.Tensor | None = None) -> torch.Tensor:
    """hidden [B, L, D] of a model whose state at position i predicts token i + 1 -> [B, L, D] whose row i predicts
    token i: row i is the state of position i - 1. Row 0 is `before` [B, 1, D] (the state of the position before
    the span) or, at the start of the sequence, its own state, as Dream's sampler reads it."""
    first = hidden[:, :1] if before is None else before
    return torch.cat([first, hidden[:, :-1]], dim=1)


class DreamCache(tuple):
    """Per layer (keys, values) [B, H_kv, T, head_dim] after RoPE, as LLaDA's cache, and `hidden` [B, T, D]: every
    position's final state (after the norm), from which a span's first row is predicted."""

    def __new__(cls, layers: KVCache, hidden: torch.Tensor):
        cache = super().__new__(cls, layers)
        cache.hidden = hidden
        return cache


class DreamAttention(nn.Module):
    """Multi-head attention with grouped keys and values; q, k and v carry biases, the output projection none."""

    def __init__(self, config: DreamConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_kv_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False  # Dream attends both ways; transformers' sdpa path would otherwise default to causal

        d, d_kv = config.hidden_size, self.num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(d, d, bias=True)
        self.k_proj = nn.Linear(d, d_kv, bias=True)
        self.v_proj = nn.Linear(d, d_kv, bias=True)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x, cos, sin, attention_mask, layer_past=None, cache_start: int = 0):
        """x [B, L, D] -> (output [B, L, D], (keys, values) [B, H_kv, T, d] of the whole sequence after RoPE)."""
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, L, d]
        k = self.k_proj(x).view(B, L, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [B, H_kv, L, d]
        v = self.v_proj(x).view(B, L, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if layer_past is not None:
            k, v = write_span(layer_past, k, v, cache_start)
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        out, _ = attention(self, q, k, v, attention_mask, scaling=self.scaling, dropout=0.0, is_causal=False)
        return self.o_proj(out.reshape(B, L, -1)), (k, v)


class DreamMLP(nn.Module):
    """down_proj(silu(gate_proj(x)) * up_proj(x))."""

    def __init__(self, config: DreamConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DreamDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: h = x + self_attn(input_layernorm(x)); out = h + mlp(post_attention_layernorm(h))."""

    def __init__(self, config: DreamConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = LLaDARMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = DreamAttention(config, layer_idx)
        self.post_attention_layernorm = LLaDARMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = DreamMLP(config)

    def forward(self, x, cos, sin, attention_mask, layer_past=None, cache_start: int = 0, use_cache: bool = False):
        att, present = self.self_attn(self.input_layernorm(x), cos, sin, attention_mask, layer_past, cache_start)
        h = x + att
        return h + self.mlp(self.post_attention_layernorm(h)), (present if use_cache else None)


class DreamPreTrainedModel(PreTrainedModel):
    config_class = DreamConfig
    config: DreamConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DreamDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, LLaDARMSNorm):
            init.ones_(module.weight)


class DreamBaseModel(nn.Module):
    """The embeddings, the decoder layers and the final norm (`model.` in the official state dict)."""

    def __init__(self, config: DreamConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([DreamDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LLaDARMSNorm(config.hidden_size, config.rms_norm_eps)


class DreamModelLM(DreamPreTrainedModel):
    """Dream with its LM head: forward(input_ids, attention_mask) -> LLaDAOutput(logits [B, L, V], ...) whose row i
    predicts token i, as LLaDAModelLM's; the arguments are LLaDAModelLM.forward's."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}  # tied only when the config says so

    def __init__(self, config: DreamConfig):
        super().__init__(config)
        self.model = DreamBaseModel(config)
        self.lm_head = LLaDALMHead(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding):
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear):
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: DreamCache | None = None,
        use_cache: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        logits_to_keep: int | slice | torch.Tensor = 0,
        output_hidden_states: bool = False,
        compute_logits: bool = True,
        is_causal: bool = False,
        loss_fn: Callable | None = None,
        **kwargs,
    ) -> LLaDAOutput:
        """input_ids [B, L]; attention_mask [B, L] (1 = token, 0 = padding; masks padded keys). The cache, span,
        logits_to_keep and compute_logits semantics are LLaDAModelLM.forward's; the cache is a DreamCache.
        last_hidden_state [B, L, D] and logits are aligned with the tokens (row i predicts token i); hidden_states
        (output_hidden_states=True) are the raw per-position states, as the official code returns them."""
        if is_causal:
            raise ValueError("is_causal=True is not supported by Dream (its shifted head is read bidirectionally); "
                             "the 'ar' objective trains a LLaDA-architecture model.")
        if past_key_values is not None and not isinstance(past_key_values, DreamCache):
            raise ValueError("past_key_values must be the DreamCache a forward with use_cache=True returns.")
        check_input_ids(input_ids, logits_to_keep, self.config.vocab_size)
        B, L = input_ids.shape
        n_layers, max_length = self.config.num_hidden_layers, self.config.max_position_embeddings
        start, key_length = cache_span(past_key_values, cache_position, B, L, n_layers, max_length)
        attention_mask = padding_mask(attention_mask, B, key_length, past_key_values is not None)
        use_cache = self.config.use_cache if use_cache is None else use_cache

        x = self.model.embed_tokens(input_ids)  # [B, L, D]
        positions = torch.arange(start, start + L, device=x.device)
        cos, sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta)
        mask = span_attention_mask(self.config._attn_implementation, attention_mask, L, False, x.device, start)

        hidden_states = () if output_hidden_states else None
        presents = () if use_cache else None
        for i, layer in enumerate(self.model.layers):
            if output_hidden_states:
                hidden_states += (x,)
            layer_past = None if past_key_values is None else past_key_values[i]
            x, present = layer(x, cos, sin, mask, layer_past=layer_past, cache_start=start, use_cache=use_cache)
            if use_cache:
                presents += (present,)
        x = self.model.norm(x)  # [B, L, D]: position i predicts token i + 1
        if output_hidden_states:
            hidden_states += (x,)

        before, states = None, x  # states: every position's final state, for the cache
        if past_key_values is not None:
            states = past_key_values.hidden  # [B, T, D]
            before = states[:, start - 1 : start] if start > 0 else None
            if start == states.shape[1]:
                states = torch.cat([states, x], dim=1)
            else:
                states[:, start : start + L] = x  # in place, as write_span does with the keys and values
        aligned = shift_to_targets(x, before)  # [B, L, D]: row i predicts token i
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(aligned[:, keep]) if compute_logits and loss_fn is None else None  # [B, K, V]
        loss = None if loss_fn is None else self.lm_head(aligned, loss_fn=loss_fn)  # the fused head + loss
        cache = DreamCache(presents, states) if use_cache else None
        return LLaDAOutput(logits=logits, loss=loss, last_hidden_state=aligned, cache=cache,
                           hidden_states=hidden_states)
