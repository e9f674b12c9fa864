"""LLaDA: a bidirectional Llama-style transformer that scores every position of a partly masked sequence.

Module tree and state-dict names are exactly those of the official GSAI-ML/LLaDA-8B-Base checkpoint
(model.transformer.{wte, blocks.{i}.{attn_norm, q_proj, k_proj, v_proj, attn_out, ff_norm, ff_proj, up_proj,
ff_out}, ln_f, ff_out}), so its safetensors load unchanged. Attention goes through transformers' attention
interface (sdpa by default, eager, flash-attn when installed) and is bidirectional unless `is_causal=True`.

This file imports only torch and transformers: it is shipped to the Hub as remote code.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_llada import LLaDAConfig


@dataclass
class LLaDAOutput(ModelOutput):
    """logits [B, L, V] (None when compute_logits=False); last_hidden_state [B, L, D] is what the LM head reads."""

    logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class LLaDARMSNorm(nn.Module):
    """RMSNorm computed in float32, cast back to the input dtype, then scaled by the weight."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotary_cos_sin(seq_len: int, head_dim: int, theta: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [L, head_dim] in float32 for positions 0..L-1 (half-split layout, both halves share a frequency)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    freqs = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)  # [L, head_dim / 2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [L, head_dim]
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, L, head_dim] in float32 and cast back."""
    x_float = x.float()
    return (x_float * cos + rotate_half(x_float) * sin).to(x.dtype)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[B, H_kv, L, d] -> [B, H_kv * n_rep, L, d] for grouped-query attention."""
    if n_rep == 1:
        return x
    B, H_kv, L, d = x.shape
    return x[:, :, None].expand(B, H_kv, n_rep, L, d).reshape(B, H_kv * n_rep, L, d)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention; attention_mask is a boolean [B, 1, Lq | 1, Lk] (True = attend) or None."""
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # [B, H, Lq, Lk]
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()  # [B, Lq, H, d]
    return out, weights


class LLaDABlock(GradientCheckpointingLayer):
    """Pre-norm Llama block: h = x + attn_out(attn(attn_norm(x))); out = h + ff_out(silu(ff_proj(m)) * up_proj(m))."""

    def __init__(self, config: LLaDAConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.d_model // config.n_heads
        self.num_heads = config.n_heads
        self.num_kv_heads = config.n_kv_heads
        self.num_key_value_groups = config.n_heads // config.n_kv_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False  # LLaDA attends both ways; transformers' sdpa path would otherwise default to causal

        d, d_kv = config.d_model, config.n_kv_heads * self.head_dim
        self.attn_norm = LLaDARMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d_kv, bias=False)
        self.v_proj = nn.Linear(d, d_kv, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_norm = LLaDARMSNorm(d, config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)  # gate
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=False)  # down

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attention_mask: torch.Tensor | None,
        is_causal: bool,
    ) -> torch.Tensor:
        B, L, _ = x.shape
        n = self.attn_norm(x)
        q = self.q_proj(n).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, L, d]
        k = self.k_proj(n).view(B, L, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [B, H_kv, L, d]
        v = self.v_proj(n).view(B, L, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        att, _ = attention(self, q, k, v, attention_mask, scaling=self.scaling, dropout=0.0, is_causal=is_causal)
        h = x + self.attn_out(att.reshape(B, L, -1))

        m = self.ff_norm(h)
        return h + self.ff_out(F.silu(self.ff_proj(m)) * self.up_proj(m))


class LLaDAPreTrainedModel(PreTrainedModel):
    config_class = LLaDAConfig
    config: LLaDAConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDABlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        std = self.config.init_std
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, LLaDARMSNorm):
            init.ones_(module.weight)


class LLaDAModel(nn.Module):
    """Holds `transformer` (a ModuleDict, as in the official checkpoint) and runs the stack."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.embedding_size, config.d_model),
                blocks=nn.ModuleList([LLaDABlock(config, i) for i in range(config.n_layers)]),
                ln_f=LLaDARMSNorm(config.d_model, config.rms_norm_eps),
                ff_out=nn.Linear(config.d_model, config.embedding_size, bias=False),  # LM head, untied
            )
        )


class LLaDAModelLM(LLaDAPreTrainedModel):
    """LLaDA with its LM head: forward(input_ids, attention_mask) -> LLaDAOutput(logits [B, L, V], ...)."""

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding):
        self.model.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.model.transformer.ff_out

    def set_output_embeddings(self, value: nn.Linear):
        self.model.transformer.ff_out = value

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as usual; when the class is registered for remote code, map AutoModelForCausalLM too (the official
        checkpoint maps both), since transformers writes only the one auto class the model registered."""
        if self._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map["AutoModelForCausalLM"] = f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}"
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _attention_mask(
        self, attention_mask: torch.Tensor | None, L: int, is_causal: bool, device: torch.device
    ) -> torch.Tensor | None:
        """The mask in the form the attention implementation expects: flash-attn takes the 2D padding mask
        [B, L] and its own causal flag; sdpa and eager take a boolean [B, 1, 1 | L, L] (True = attend), or None
        when nothing is masked (sdpa's fast path)."""
        if "flash" in (self.config._attn_implementation or ""):
            return attention_mask
        mask = None
        if attention_mask is not None:
            mask = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, L]: padded keys are never attended
        if is_causal:
            causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()[None, None]  # [1, 1, L, L]
            mask = causal if mask is None else mask & causal
        return mask

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        compute_logits: bool = True,
        is_causal: bool = False,
        **kwargs,
    ) -> LLaDAOutput:
        """input_ids [B, L]; attention_mask [B, L] with 1 = real token, 0 = padding (masks padded keys only).
        compute_logits=False skips the LM head (for fused losses that read last_hidden_state and the head weight).
        is_causal=True turns the model autoregressive (the `ar` objective)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}.")
        V = self.config.embedding_size
        if input_ids.numel() and bool(((input_ids < 0) | (input_ids >= V)).any()):
            bad = input_ids[(input_ids < 0) | (input_ids >= V)][0].item()
            raise ValueError(
                f"input_ids contains token id {bad}, outside [0, {V}) (the model's embedding_size); check that the "
                f"tokenizer matches the model, or resize the embeddings with model.resize_token_embeddings()."
            )
        B, L = input_ids.shape
        if L > self.config.max_sequence_length:
            raise ValueError(
                f"sequence length {L} exceeds max_sequence_length={self.config.max_sequence_length}; shorten the "
                f"input or raise max_sequence_length in the config."
            )
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has {tuple(input_ids.shape)}; "
                    f"pass a 2D mask [batch, length] with 1 for real tokens and 0 for padding."
                )
            if bool(attention_mask.all()):
                attention_mask = None  # nothing is padded: take the unmasked (faster) attention path

        t = self.model.transformer
        x = t.wte(input_ids)  # [B, L, D]
        cos, sin = rotary_cos_sin(L, self.config.head_dim, self.config.rope_theta, x.device)
        mask = self._attention_mask(attention_mask, L, is_causal, x.device)

        hidden_states = (x,) if output_hidden_states else None
        for block in t.blocks:
            x = block(x, cos, sin, mask, is_causal)
            if output_hidden_states:
                hidden_states += (x,)
        x = t.ln_f(x)  # [B, L, D]
        logits = t.ff_out(x) if compute_logits else None  # [B, L, V]
        return LLaDAOutput(logits=logits, last_hidden_state=x, hidden_states=hidden_states)
