"""LLaDA-MoE: LLaDA's bidirectional masked-diffusion transformer with a mixture-of-experts MLP (OLMoE-style).

Module tree and state-dict names are those of inclusionAI/LLaDA-MoE-7B-A1B-Base / -Instruct
(model.embed_tokens, model.layers.{i}.{input_layernorm, self_attn.{q_proj, k_proj, v_proj, o_proj, q_norm, k_norm},
post_attention_layernorm, mlp.{gate, experts.{j}.{gate_proj, up_proj, down_proj}, expert_bias}, shared_expert},
model.norm, lm_head), so the official safetensors load unchanged. Per layer:

    h   = x + o_proj(attention(rope(k_norm(k_proj(n))), rope(q_norm(q_proj(n))), v_proj(n))),  n = input_layernorm(x)
    m   = post_attention_layernorm(h)
    p   = softmax(gate(m)) (+ expert_bias)                    # router probabilities over all experts, float32
    out = h + sum_{e in topk(p)} p_e * expert_e(m) (+ shared_expert(m))

The k selected probabilities are not renormalised (the official code never does, whatever norm_topk_prob says).
The forward contract is LLaDAModelLM's: mask id in the config, `logits_to_keep`, `compute_logits=False` with the LM
head as a module for fused losses, a KV cache for spans, bidirectional attention with a padding `attention_mask`
(the official file drops the mask; here padded keys are never attended, so a padded row scores like the row alone).
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_llada_moe import LLaDAMoEConfig
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


class LLaDAMoEMLP(nn.Module):
    """SwiGLU MLP: down_proj(act(gate_proj(x)) * up_proj(x)); one expert, the shared expert or a dense layer's MLP."""

    def __init__(self, config: LLaDAMoEConfig, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LLaDAMoESparseMoeBlock(nn.Module):
    """Top-k routed experts: each token goes to the k experts of highest router probability, weighted by those
    probabilities. Every expert runs on every forward (on no tokens when none chose it), so ZeRO-3 sees the same
    modules, in the same order, on every step and on every rank."""

    def __init__(self, config: LLaDAMoEConfig):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False)  # the router
        self.experts = nn.ModuleList(
            [LLaDAMoEMLP(config, config.expert_intermediate_size) for _ in range(config.num_experts)]
        )
        if config.moe_router_enable_expert_bias:
            self.register_buffer("expert_bias", torch.zeros(config.num_experts))  # in the state dict, as officially
        else:
            self.expert_bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, D] -> [B, L, D]."""
        B, L, D = x.shape
        tokens = x.reshape(-1, D)  # [N, D]
        probs = F.softmax(self.gate(tokens), dim=-1, dtype=torch.float32)  # [N, E]
        if self.expert_bias is not None:
            probs = probs + self.expert_bias
        weights, chosen = probs.topk(self.top_k, dim=-1)  # [N, k]
        weights = weights.to(x.dtype)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            token, slot = torch.where(chosen == e)  # the tokens that chose expert e, and in which of their k slots
            out.index_add_(0, token, expert(tokens[token]) * weights[token, slot, None])
        return out.view(B, L, D)


class LLaDAMoEAttention(nn.Module):
    """Multi-head (or grouped-query) attention with optional per-head q/k RMSNorm and partial RoPE."""

    def __init__(self, config: LLaDAMoEConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_kv_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False  # bidirectional; transformers' sdpa path would otherwise default to causal

        d, bias = config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(d, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(d, d, bias=bias)
        if config.qk_layernorm:
            self.q_norm = LLaDARMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = LLaDARMSNorm(self.head_dim, config.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attention_mask: torch.Tensor | None,
        is_causal: bool,
        layer_past: tuple[torch.Tensor, torch.Tensor] | None,
        cache_start: int,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x [B, L, D] -> (output [B, L, D], (keys, values) [B, H_kv, T, d] after RoPE, the cache's when given)."""
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(B, L, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, L, self.num_kv_heads, self.head_dim)
        if self.config.qk_layernorm:  # over each head's dims
            q, k = self.q_norm(q), self.k_norm(k)
        if self.config.clip_qkv is not None:
            c = self.config.clip_qkv
            q, k, v = q.clamp(-c, c), k.clamp(-c, c), v.clamp(-c, c)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H(_kv), L, d]
        r = self.config.rotary_dim  # RoPE on the first r dims of each head, the rest pass through
        q = torch.cat([apply_rotary(q[..., :r], cos, sin), q[..., r:]], dim=-1)
        k = torch.cat([apply_rotary(k[..., :r], cos, sin), k[..., r:]], dim=-1)
        if layer_past is not None:
            k, v = write_span(layer_past, k, v, cache_start)

        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        att, _ = attention(self, q, k, v, attention_mask, scaling=self.scaling, dropout=0.0, is_causal=is_causal)
        return self.o_proj(att.reshape(B, L, -1)), (k, v)


class LLaDAMoEDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: attention, then a mixture of experts (plus the shared expert, if any) or a dense MLP."""

    def __init__(self, config: LLaDAMoEConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = LLaDARMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LLaDAMoEAttention(config, layer_idx)
        self.post_attention_layernorm = LLaDARMSNorm(config.hidden_size, config.rms_norm_eps)
        moe = config.moe_layer_freq[layer_idx] != 0
        self.mlp = LLaDAMoESparseMoeBlock(config) if moe else LLaDAMoEMLP(config, config.dense_intermediate_size)
        if moe and config.shared_expert_intermediate_size is not None:
            self.shared_expert = LLaDAMoEMLP(config, config.shared_expert_intermediate_size)
        else:
            self.shared_expert = None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attention_mask: torch.Tensor | None,
        is_causal: bool,
        layer_past: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache_start: int = 0,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """As LLaDABlock.forward: (output [B, L, D], the layer's keys and values when use_cache, else None)."""
        att, kv = self.self_attn(self.input_layernorm(x), cos, sin, attention_mask, is_causal, layer_past, cache_start)
        h = x + att
        m = self.post_attention_layernorm(h)
        mlp = self.mlp(m)
        if self.shared_expert is not None:
            mlp = mlp + self.shared_expert(m)
        return h + mlp, (kv if use_cache else None)


class LLaDAMoEPreTrainedModel(PreTrainedModel):
    config_class = LLaDAMoEConfig
    config: LLaDAMoEConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDAMoEDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, LLaDARMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, LLaDAMoESparseMoeBlock) and module.expert_bias is not None:
            init.zeros_(module.expert_bias)


class LLaDAMoEModel(nn.Module):
    """The embeddings, the layers and the final norm (`model.*` in the official state dict)."""

    def __init__(self, config: LLaDAMoEConfig):
        super().__init__()
        # padding_idx as in the official code: the pad id's embedding row gets no gradient.
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList([LLaDAMoEDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LLaDARMSNorm(config.hidden_size, config.rms_norm_eps)


class LLaDAMoEModelLM(LLaDAMoEPreTrainedModel):
    """LLaDA-MoE with its LM head: forward(input_ids, attention_mask) -> LLaDAOutput(logits [B, L, V], ...), with the
    arguments and outputs of LLaDAModelLM.forward."""

    def __init__(self, config: LLaDAMoEConfig):
        super().__init__(config)
        self.model = LLaDAMoEModel(config)
        self.lm_head = LLaDALMHead(config.hidden_size, config.vocab_size, bias=False)  # untied
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
        past_key_values: KVCache | None = None,
        use_cache: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        logits_to_keep: int | slice | torch.Tensor = 0,
        output_hidden_states: bool = False,
        compute_logits: bool = True,
        is_causal: bool = False,
        loss_fn: Callable | None = None,
        attention_bias: torch.Tensor | None = None,
        **kwargs,
    ) -> LLaDAOutput:
        """See LLaDAModelLM.forward: the same arguments, checks and outputs."""
        if attention_bias is not None:
            raise ValueError("attention_bias is not supported: LLaDA-MoE attends bidirectionally. Pass "
                             "attention_mask [batch, length] to mask padding, or is_causal=True for causal attention.")
        check_input_ids(input_ids, logits_to_keep, self.config.vocab_size)
        if is_causal and past_key_values is not None:
            raise ValueError("is_causal=True cannot be combined with past_key_values: the cache serves bidirectional "
                             "(diffusion) decoding.")
        B, L = input_ids.shape
        n_layers, max_length = self.config.n_layers, self.config.max_sequence_length
        start, key_length = cache_span(past_key_values, cache_position, B, L, n_layers, max_length)
        attention_mask = padding_mask(attention_mask, B, key_length, past_key_values is not None)
        use_cache = self.config.use_cache if use_cache is None else use_cache

        x = self.model.embed_tokens(input_ids)  # [B, L, D]
        positions = torch.arange(start, start + L, device=x.device)
        cos, sin = rotary_cos_sin(positions, self.config.rotary_dim, self.config.rope_theta)
        mask = span_attention_mask(self.config._attn_implementation, attention_mask, L, is_causal, x.device, start)

        hidden_states = () if output_hidden_states else None
        presents = () if use_cache else None
        for i, layer in enumerate(self.model.layers):
            if output_hidden_states:
                hidden_states += (x,)
            layer_past = None if past_key_values is None else past_key_values[i]
            x, present = layer(x, cos, sin, mask, is_causal, layer_past=layer_past, cache_start=start,
                               use_cache=use_cache)
            if use_cache:
                presents += (present,)
        x = self.model.norm(x)  # [B, L, D]
        if output_hidden_states:
            hidden_states += (x,)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(x[:, keep]) if compute_logits and loss_fn is None else None  # [B, K, V]
        loss = None if loss_fn is None else self.lm_head(x, loss_fn=loss_fn)  # the fused head + loss
        return LLaDAOutput(logits=logits, loss=loss, last_hidden_state=x, cache=presents, hidden_states=hidden_states)
