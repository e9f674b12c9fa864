"""LLaDA: a bidirectional Llama-style transformer that scores every position of a partly masked sequence.

Module tree and state-dict names are exactly those of the official GSAI-ML/LLaDA-8B-Base checkpoint
(model.transformer.{wte, blocks.{i}.{attn_norm, q_proj, k_proj, v_proj, attn_out, ff_norm, ff_proj, up_proj,
ff_out}, ln_f, ff_out}), so its safetensors load unchanged. Attention goes through transformers' attention
interface (sdpa by default, eager, flash-attn when installed) and is bidirectional unless `is_causal=True`.
A forward may run a span of the sequence against the cached keys and values of the rest (`past_key_values`), which
is what block-wise diffusion decoding with a KV cache needs.

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


KVCache = tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer (keys, values) [B, H_kv, T, head_dim]


@dataclass
class LLaDAOutput(ModelOutput):
    """logits [B, K, V] at the logits_to_keep positions (None when compute_logits=False or a loss_fn is given);
    loss: what forward's loss_fn returned (else None); last_hidden_state
    [B, L, D] is what the LM head reads; cache (use_cache=True) the keys and values of every layer, to pass back as
    past_key_values (transformers 5 names this output `cache`; recent versions also read it as `past_key_values`);
    hidden_states (output_hidden_states=True) the embeddings and each block's output, the last after ln_f."""

    logits: torch.FloatTensor | None = None
    loss: torch.Tensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    cache: KVCache | None = None
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


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [L, head_dim] in float32 for the positions [L] (half-split layout, both halves share a frequency)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    freqs = torch.outer(positions.float(), inv_freq)  # [L, head_dim / 2]
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


def write_span(
    layer_past: tuple[torch.Tensor, torch.Tensor], k: torch.Tensor, v: torch.Tensor, start: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of the whole cached sequence with the span's k, v [B, H_kv, L, d] at positions
    [start, start + L): written into the cached tensors in place when the span lies inside them (no copy of the
    cache per step), appended when it starts where they end."""
    past_k, past_v = layer_past
    if start == past_k.shape[2]:
        return torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    past_k[:, :, start : start + k.shape[2]] = k
    past_v[:, :, start : start + v.shape[2]] = v
    return past_k, past_v


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


def span_attention_mask(
    attn_implementation: str | None,
    attention_mask: torch.Tensor | None,
    L: int,
    is_causal: bool,
    device: torch.device,
    cache_start: int,
) -> torch.Tensor | None:
    """The mask in the form the attention implementation expects, for L queries at cache_start.. against the keys
    of attention_mask [B, Lk]: flash-attn takes the 2D padding mask and its own causal flag; sdpa and eager take a
    boolean [B, 1, 1 | L, Lk] (True = attend), or None when nothing is masked (sdpa's fast path)."""
    if "flash" in (attn_implementation or ""):
        if attention_mask is not None and attention_mask.shape[1] != L and not torch.equal(
            attention_mask[:, -L:], attention_mask[:, cache_start : cache_start + L]
        ):
            raise ValueError(
                "flash-attn reads the queries' padding from the last columns of attention_mask, but this span "
                "of the cache is padded differently; run it with attn_implementation='sdpa'."
            )
        return attention_mask
    mask = None
    if attention_mask is not None:
        mask = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, Lk]: padded keys are never attended
    if is_causal:
        causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()[None, None]  # [1, 1, L, L]
        mask = causal if mask is None else mask & causal
    return mask


def cache_span(
    past_key_values: KVCache | None,
    cache_position: torch.Tensor | None,
    B: int,
    L: int,
    n_layers: int,
    max_sequence_length: int,
) -> tuple[int, int]:
    """(start, key length): the input's first position and the number of keys it attends to, after checking that
    past_key_values and cache_position describe a consecutive span inside the cache or right after it."""
    T = 0
    if past_key_values is not None:
        if len(past_key_values) != n_layers or past_key_values[0][0].shape[0] != B:
            raise ValueError(
                f"past_key_values must hold (keys, values) for each of the {n_layers} layers with batch size {B}, "
                f"as a forward with use_cache=True returns them."
            )
        T = past_key_values[0][0].shape[2]
    start = T if cache_position is None or not cache_position.numel() else int(cache_position.flatten()[0])
    if cache_position is not None:
        if cache_position.shape != (L,) or not torch.equal(
            cache_position, torch.arange(start, start + L, device=cache_position.device)
        ):
            raise ValueError(
                f"cache_position must be the {L} consecutive positions of input_ids, e.g. "
                f"torch.arange(start, start + {L}); got {cache_position.tolist()}."
            )
    if past_key_values is not None and not (start == T or start + L <= T):
        raise ValueError(
            f"input_ids at positions [{start}, {start + L}) must lie inside the cache of {T} positions or start "
            f"where it ends (cache_position={T}..)."
        )
    if start + L > max_sequence_length:
        raise ValueError(
            f"sequence length {start + L} exceeds max_sequence_length={max_sequence_length}; shorten the input or "
            f"raise max_sequence_length in the config."
        )
    return start, max(T, start + L)


def check_input_ids(input_ids: torch.Tensor, logits_to_keep: int | slice | torch.Tensor, embedding_size: int):
    """Refuse input ids the model cannot score and a negative logits_to_keep, naming the fix."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}.")
    V = embedding_size
    if input_ids.numel() and bool(((input_ids < 0) | (input_ids >= V)).any()):
        bad = input_ids[(input_ids < 0) | (input_ids >= V)][0].item()
        raise ValueError(
            f"input_ids contains token id {bad}, outside [0, {V}) (the model's embedding_size); check that the "
            f"tokenizer matches the model, or resize the embeddings with model.resize_token_embeddings()."
        )
    if isinstance(logits_to_keep, int) and logits_to_keep < 0:
        raise ValueError(f"logits_to_keep={logits_to_keep} must be >= 0 (0 = all positions, n = the last n).")


def padding_mask(attention_mask: torch.Tensor | None, B: int, key_length: int, cached: bool) -> torch.Tensor | None:
    """attention_mask [B, key_length] checked, or None when nothing is padded (the faster unmasked attention)."""
    if attention_mask is None:
        return None
    if attention_mask.shape != (B, key_length):
        keys = "the keys (cache and input) need" if cached else "input_ids has"
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but {keys} {(B, key_length)}; "
            f"pass a 2D mask [batch, length] with 1 for real tokens and 0 for padding."
        )
    return None if bool(attention_mask.all()) else attention_mask


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
        layer_past: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache_start: int = 0,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """x [B, L, D] at positions cache_start.. -> (output [B, L, D], (keys, values) [B, H_kv, T, d] of the whole
        sequence after RoPE when use_cache, else None). With layer_past, the span's keys and values are written
        into it (write_span) and the span attends to all of them."""
        B, L, _ = x.shape
        n = self.attn_norm(x)
        q = self.q_proj(n).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, L, d]
        k = self.k_proj(n).view(B, L, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [B, H_kv, L, d]
        v = self.v_proj(n).view(B, L, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if layer_past is not None:
            k, v = write_span(layer_past, k, v, cache_start)

        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        att, _ = attention(self, q, k, v, attention_mask, scaling=self.scaling, dropout=0.0, is_causal=is_causal)
        h = x + self.attn_out(att.reshape(B, L, -1))

        m = self.ff_norm(h)
        return h + self.ff_out(F.silu(self.ff_proj(m)) * self.up_proj(m)), ((k, v) if use_cache else None)


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


class LLaDALMHead(nn.Linear):
    """The untied LM head (`ff_out` in the official state dict). `head(x)` gives logits [.., V]; `head(x, loss_fn=f)`
    gives f(x, weight) instead: a loss that needs the head's weight (the fused, chunked LM head + loss) runs as the
    head's own forward, so ZeRO-3, which gathers a partitioned weight around each module's forward and backward,
    hands it the whole weight. Reach it through `LLaDAModelLM.forward(..., loss_fn=f)`: DDP expects every parameter
    to be used inside the wrapped model's forward."""

    def forward(self, hidden: torch.Tensor, loss_fn: Callable | None = None) -> torch.Tensor:
        if loss_fn is None:
            return super().forward(hidden)
        return loss_fn(hidden, self.weight)


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
                ff_out=LLaDALMHead(config.d_model, config.embedding_size, bias=False),  # untied
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
        attention_bias: torch.Tensor | None = None,
        loss_fn: Callable | None = None,
        **kwargs,
    ) -> LLaDAOutput:
        """input_ids [B, L]; attention_mask [B, L] with 1 = real token, 0 = padding (masks padded keys only).

        past_key_values: per layer (keys, values) [B, H_kv, T, head_dim] after RoPE, as a forward with use_cache=True
        returns them. input_ids are then the span of the sequence at `cache_position` (consecutive; default T..,
        appended): its keys and values are written into the cache in place (a span inside it) or appended (a span
        starting at T), and it attends to the whole sequence, both ways; attention_mask then covers all the keys
        [B, max(T, end of span)]. use_cache (default config.use_cache) returns the keys and values of every layer
        as `cache`. logits_to_keep picks the positions the LM head runs on, as in transformers: 0 = all,
        n > 0 = the last n, or a slice / index tensor along L. compute_logits=False skips the LM head (for fused
        losses that read last_hidden_state and the head weight). loss_fn(hidden [B, L, D], head weight [V, D]) runs
        as the LM head instead of the logits (`LLaDALMHead`) and its result is returned as `loss`: a fused loss
        computed inside this forward, where DDP and ZeRO-3 track the head's weight. is_causal=True turns the model autoregressive
        (the `ar` objective)."""
        if attention_bias is not None:
            raise ValueError(
                "attention_bias is not supported: LLaDA attends bidirectionally (the official code ignores this "
                "argument). Pass attention_mask [batch, length] to mask padding, or is_causal=True for causal "
                "attention."
            )
        check_input_ids(input_ids, logits_to_keep, self.config.embedding_size)
        if is_causal and past_key_values is not None:
            raise ValueError("is_causal=True cannot be combined with past_key_values: the cache serves bidirectional "
                             "(diffusion) decoding.")
        B, L = input_ids.shape
        n_layers, max_length = self.config.n_layers, self.config.max_sequence_length
        start, key_length = cache_span(past_key_values, cache_position, B, L, n_layers, max_length)
        attention_mask = padding_mask(attention_mask, B, key_length, past_key_values is not None)
        use_cache = self.config.use_cache if use_cache is None else use_cache

        t = self.model.transformer
        x = t.wte(input_ids)  # [B, L, D]
        positions = torch.arange(start, start + L, device=x.device)
        cos, sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta)
        mask = span_attention_mask(self.config._attn_implementation, attention_mask, L, is_causal, x.device, start)

        hidden_states = () if output_hidden_states else None
        presents = () if use_cache else None
        for i, block in enumerate(t.blocks):
            if output_hidden_states:
                hidden_states += (x,)
            layer_past = None if past_key_values is None else past_key_values[i]
            x, present = block(x, cos, sin, mask, is_causal, layer_past=layer_past, cache_start=start,
                               use_cache=use_cache)
            if use_cache:
                presents += (present,)
        x = t.ln_f(x)  # [B, L, D]
        if output_hidden_states:
            hidden_states += (x,)  # after ln_f, as the official code and transformers return it
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = t.ff_out(x[:, keep]) if compute_logits and loss_fn is None else None  # [B, K, V]
        loss = None if loss_fn is None else t.ff_out(x, loss_fn=loss_fn)
        return LLaDAOutput(logits=logits, loss=loss, last_hidden_state=x, cache=presents, hidden_states=hidden_states)
