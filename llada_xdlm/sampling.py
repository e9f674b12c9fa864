"""Few-step sampling: LLaDA's remasking sampler with XDLM refinement (default) and the ancestral posterior
sampler, batched over left-padded prompts, optionally recording what every step did. `SamplerConfig` holds every
setting that decides what is sampled, validated once; generate() takes one or its fields as keywords. A trained
model's defaults come with it (`checkpoint_sampler`): the sampler settings its config.json records under `sampling`
(the recipe's `sampling:`), and k1 and the schedule it was trained with.

Generation is fixed-length: the canvas is the prompt followed by `gen_length` masks and every step is one model
forward (two with classifier-free guidance). Stop strings therefore cannot end a diffusion run early: they are
applied to the final canvas (`stop_strings=`), or to decoded texts with `truncate_at_stop`.

`xdlm sample --model DIR --prompt TEXT [--steps 32 --gen_length 64 ...]` prints a checkpoint's continuations; its
options are SamplerConfig's fields (add_sampler_arguments), each defaulting to the checkpoint's.

Fast few-step decoding (docs/sampling.md): `cache="prefix"` or `"dual"` serves the positions a step does not
change from a KV cache refreshed at each block's first step, and `threshold=` commits every mask whose confidence
exceeds it, `steps` then being an upper bound.
"""

import argparse
import types
from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch

from .checkpoint import require_diffusion, resolve_setting
from .diffusion import get_schedule, prior_sample, reverse_step_probs
from .modeling import is_backbone

SAMPLERS = ("remask", "ancestral")
REMASKING = ("low_confidence", "random")
REFINE_BUDGETS = ("global", "block")
CACHES = ("none", "prefix", "dual")
COMPATS = ("none", "xdlm-authors")
CHOICES = {"sampler": SAMPLERS, "remasking": REMASKING, "refine_budget": REFINE_BUDGETS, "cache": CACHES,
           "compat": COMPATS}


@dataclass(frozen=True)
class SamplerConfig:
    """The sampler's settings (docs/sampling.md), checked once on construction; every error names the field.

    steps: model forwards (split evenly over the blocks); gen_length: tokens generated after the prompt;
    block_length: semi-autoregressive block size (None = one block); sampler: "remask" or "ancestral";
    k1: uniform-noise share (None = the model's config.k1); refine_budget: how the XDLM rewrite budget is counted,
    "global" (over the whole generation) or "block" (restarted at every block, zero at a block's first step, as the
    XDLM authors' sampler); temperature: Gumbel noise scale (0 = greedy); remasking: "low_confidence" or "random";
    top_p: nucleus of the ancestral sampler; cfg_scale: classifier-free guidance (0 = off); cache: "none", "prefix"
    (the prompt and finished blocks come from a KV cache refreshed at each block's first step) or "dual" (the masked
    suffix too); threshold: commit every mask of the block whose confidence exceeds it, at least the fixed
    schedule's share of what is left (None = the fixed schedule); schedule: the ancestral sampler's steps are uniform
    in t under this noise schedule, "linear" (alpha = 1 - t) or "loglinear" (None = the one the model was trained
    with, config.schedule); compat: "none" (this sampler) or "xdlm-authors" (the XDLM authors' generate_xdm /
    generate_mdm token for token, quirks included: prompt tokens may be rewritten, confidences are ranked in the
    model's dtype, the mask id may be generated; docs/evaluation.md lists every difference)."""

    steps: int = 32
    gen_length: int = 256
    block_length: int | None = None
    sampler: str = "remask"
    k1: float | None = None
    refine_budget: str = "global"
    temperature: float = 0.0
    remasking: str = "low_confidence"
    top_p: float | None = None
    cfg_scale: float = 0.0
    cache: str = "none"
    threshold: float | None = None
    schedule: str | None = None
    compat: str = "none"

    def __post_init__(self):
        if self.block_length is None:
            object.__setattr__(self, "block_length", self.gen_length)
        for name in ("steps", "gen_length", "block_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1.")
        for name in ("k1", "temperature", "top_p", "cfg_scale", "threshold"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{name}={value!r} must be a number.")
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {choices}.")
        if self.schedule is not None:
            get_schedule(self.schedule)  # an unknown name is refused with the list of known ones
        if self.gen_length % self.block_length:
            raise ValueError(f"gen_length={self.gen_length} is not a multiple of block_length={self.block_length}; "
                             f"choose a block_length that divides gen_length (or None for a single block).")
        if self.steps % self.num_blocks:
            raise ValueError(f"steps={self.steps} cannot be split evenly over {self.num_blocks} blocks; use a "
                             f"multiple of gen_length // block_length.")
        if self.k1 is not None and not 0.0 <= self.k1 <= 1.0:
            raise ValueError(f"k1={self.k1} must lie in [0, 1] (0 = masking only as in LLaDA, 1 = uniform noise "
                             f"only).")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 = greedy).")
        if self.cfg_scale < 0:
            raise ValueError(f"cfg_scale={self.cfg_scale} must be >= 0 (0 = no classifier-free guidance).")
        if self.threshold is not None:
            if self.threshold <= 0:
                raise ValueError(f"threshold={self.threshold} must be > 0 (a confidence, e.g. 0.9; None = the fixed "
                                 f"schedule).")
            if self.remasking != "low_confidence":
                raise ValueError("threshold commits the masks by confidence; it needs remasking='low_confidence'.")
        if self.sampler == "ancestral":
            remask_only = {"temperature": self.temperature != 0, "remasking": self.remasking != "low_confidence",
                           "block_length": self.block_length != self.gen_length,
                           "refine_budget": self.refine_budget != "global", "threshold": self.threshold is not None}
            given = [name for name, set_ in remask_only.items() if set_]
            if given:
                raise ValueError(f"{given[0]} applies to sampler='remask' only; the ancestral sampler draws from "
                                 f"the posterior itself (sharpen it with top_p).")
            if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
                raise ValueError(f"top_p={self.top_p} must lie in (0, 1].")
        elif self.top_p is not None:
            raise ValueError("top_p applies to sampler='ancestral' only; the remasking sampler uses temperature.")
        elif self.schedule is not None:
            raise ValueError("schedule applies to sampler='ancestral' only; the remasking sampler fills an even "
                             "share of the masks per step whatever the model's schedule.")
        if self.compat == "xdlm-authors":
            self._check_authors_compat()

    def _check_authors_compat(self):
        """compat='xdlm-authors' covers what the authors' sampler does: their remasking sampler, low-confidence
        order, no cache, no threshold, no guidance (their harness never runs it), the budget counted per block."""
        theirs = {"sampler": "remask", "remasking": "low_confidence", "cache": "none", "threshold": None,
                  "cfg_scale": 0}
        for name, value in theirs.items():
            if getattr(self, name) != value:
                raise ValueError(f"{name}={getattr(self, name)!r} is not part of the XDLM authors' sampler; "
                                 f"compat='xdlm-authors' needs {name}={value!r} (or use compat='none').")
        if self.refine_budget != "block":
            raise ValueError("compat='xdlm-authors' counts the rewrite budget per block, as the authors' sampler "
                             "does: pass refine_budget='block'.")
        if self.k1 == 1:
            raise ValueError("k1=1 divides by zero in the authors' rewrite budget k1 / (1 - k1); "
                             "compat='xdlm-authors' needs k1 < 1 (compat='none' refines without a budget at k1=1).")

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @classmethod
    def from_kwargs(cls, config: "SamplerConfig | None" = None, **settings) -> "SamplerConfig":
        """`config` with `settings` replacing its fields (a fresh default config when None); unknown names are
        refused with the list of valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(settings) - set(valid))
        if unknown:
            raise TypeError(f"unknown sampler setting(s) {unknown}; valid: {valid}.")
        return cls(**settings) if config is None else replace(config, **settings)


def checkpoint_sampler(model_config, config: SamplerConfig | None = None, defaults: dict | None = None,
                       **settings) -> SamplerConfig:
    """The SamplerConfig a model samples with. `config` when given; else SamplerConfig's defaults, replaced by the
    caller's `defaults` (e.g. lm-eval's gen_length 256), then by the checkpoint's (config.json `sampling`). Then
    `settings` replace fields. k1 and (for the ancestral sampler) schedule left None become the ones the model was
    trained with; a value given that differs from them is used and logged once. A checkpoint trained
    autoregressively is refused."""
    require_diffusion(model_config, "the diffusion sampler")
    if config is None:
        saved = getattr(model_config, "sampling", None) or {}
        try:
            SamplerConfig.from_kwargs(**saved)
        except (TypeError, ValueError) as err:
            raise ValueError(f"the checkpoint's sampler defaults (config.json `sampling` = {saved}) are invalid: "
                             f"{err}") from err
        config = SamplerConfig.from_kwargs(**{**(defaults or {}), **saved, **settings})
    else:
        config = SamplerConfig.from_kwargs(config, **settings)
    config = replace(config, k1=float(resolve_setting(model_config, "k1", config.k1)))
    if config.sampler == "ancestral":
        config = replace(config, schedule=resolve_setting(model_config, "schedule", config.schedule))
    return config


@dataclass
class Trajectory:
    """What each of the S steps did to the generated part of the canvas (B rows, G = gen_length positions).
    tokens[0] is the starting canvas (all masks; the prior draw for the ancestral sampler), tokens[s + 1] the
    canvas after step s. Prompt and padding are not recorded: they never change (compat="xdlm-authors" may rewrite
    them; those rewrites are only seen in the returned sequences)."""

    tokens: torch.Tensor  # [S + 1, B, G]
    filled: torch.Tensor  # [S, B, G] bool: mask -> token
    refined: torch.Tensor  # [S, B, G] bool: token -> another token
    remasked: torch.Tensor  # [S, B, G] bool: token -> mask
    mask_id: int


@dataclass
class GenerateOutput:
    """generate(..., return_trajectory=True): the final sequences [B, P + G] and the step-by-step trajectory."""

    sequences: torch.Tensor
    trajectory: Trajectory


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    config: SamplerConfig | None = None,
    *,
    mask_id: int | None = None,
    eos_token_id: int | None = None,
    suppress_tokens: Sequence[int] | None = None,
    stop_strings: Sequence[str] | None = None,
    tokenizer=None,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
    **settings,
) -> torch.Tensor | GenerateOutput:
    """Generate `gen_length` tokens after each (left-padded) prompt in `steps` model forwards.

    input_ids [B, P] (left-padded when prompts differ in length, with attention_mask [B, P], 1 = real token).
    The sampler's settings come from `config` (a SamplerConfig; default: the model's saved defaults, config.json
    `sampling`, over SamplerConfig's) and/or keywords naming its fields (steps=32, gen_length=256,
    block_length=None, sampler="remask", k1=None, refine_budget="global", temperature=0.0,
    remasking="low_confidence", top_p=None, cfg_scale=0.0, cache="none", threshold=None, schedule=None,
    compat="none"); keywords override the config (checkpoint_sampler).
    sampler "remask": each step fills the most confident masks of the current block (even split of the block over
    its steps, remainder to the earliest steps); with k1 > 0 it also rewrites committed generated tokens whose
    prediction differs and is at least as probable, most confident first, within the refine_budget rule
    (docs/sampling.md; unlimited at k1 = 1). temperature > 0 draws the candidates with Gumbel noise; remasking
    "random" fills masks in random order; block_length < gen_length is semi-autoregressive.
    sampler "ancestral": starts from the prior and applies the plug-in posterior over `steps` uniform steps in t
    under the schedule (from t = 1 to 0, the last to alpha = 1); top_p restricts the model's prediction to its
    nucleus first.
    cache "prefix" / "dual" (backbones only): a block's first step runs the whole canvas and keeps its keys and
    values; its later steps run only the block and what follows it ("prefix") or the block alone ("dual") against
    them, and refinement then rewrites committed tokens of the current block only. threshold: each step commits
    every mask of the block whose confidence exceeds it (at least ceil(masks left / steps left)), and a block ends
    as soon as it has no mask left.
    compat "xdlm-authors": the XDLM authors' sampler instead, quirks included (_authors_remask_loop): it may
    rewrite prompt tokens and generate the mask id, and ranks in the model's dtype.
    k1, schedule and mask_id default to model.config.k1, .schedule and .mask_token_id; a model trained with objective
    "ar" is refused. cfg_scale > 0 adds classifier-free
    guidance (the unconditional copy has its prompt replaced by masks). suppress_tokens are never generated.
    eos_token_id, when given, turns every generated token after the first EOS into EOS (the canvas is fixed-length;
    what follows the end of the text is noise). stop_strings (with the `tokenizer` that decodes the ids) do the same
    after the token that completes the first stop string of a row, the stop string kept; they need an EOS id
    (eos_token_id, else the tokenizer's, which then also acts as eos_token_id).
    Returns sequences [B, P + gen_length], or GenerateOutput(sequences, trajectory) with return_trajectory.
    """
    model_config = getattr(model, "config", None)
    config = checkpoint_sampler(model_config, config, **settings)
    mask_id = getattr(model_config, "mask_token_id", None) if mask_id is None else mask_id
    V = getattr(model_config, "embedding_size", None) or getattr(model_config, "vocab_size", None)
    if stop_strings is not None and eos_token_id is None:
        eos_token_id = getattr(tokenizer, "eos_token_id", None)
    if config.cache != "none" and not is_backbone(model):
        raise ValueError(f"cache={config.cache!r} needs a backbone of llada_xdlm.modeling (a forward that takes "
                         f"past_key_values); got {type(model).__name__}. Use cache='none'.")
    _check_args(input_ids, attention_mask, config, mask_id, V, suppress_tokens)
    _check_stop(stop_strings, tokenizer, eos_token_id)

    B, P = input_ids.shape
    G = config.gen_length
    device = input_ids.device
    x = torch.cat([input_ids, input_ids.new_full((B, G), mask_id)], dim=1)  # [B, P + G] the canvas
    real_prompt = torch.zeros_like(x, dtype=torch.bool)  # [B, L] real prompt tokens (masked out for cfg)
    real_prompt[:, :P] = True if attention_mask is None else attention_mask.bool()
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(B, G)], dim=1)  # [B, L]
    never = [mask_id] if config.compat == "none" else []  # the authors' sampler may propose the mask
    banned = torch.tensor([*never, *(suppress_tokens or ())], dtype=torch.long, device=device)  # logits -> -inf

    caches = {}  # guidance branch -> KV cache of the current block; lives for this call only

    def logits_at(start: int, end: int, refresh: bool) -> torch.Tensor:
        """One step's model prediction for canvas positions [start, end): [B, end - start, V], banned ids -inf.
        refresh: run the whole canvas (and, with a cache, keep its keys and values for the next steps)."""

        def branch(name, ids):
            logits, caches[name] = _window_logits(model, ids, attention_mask, start, end, config.cache,
                                                  None if refresh else caches[name])
            return logits

        logits = branch("cond", x)
        if config.cfg_scale > 0:
            uncond = branch("uncond", x.masked_fill(real_prompt, mask_id))
            logits = uncond + (config.cfg_scale + 1) * (logits - uncond)
        return logits.index_fill_(-1, banned, float("-inf"))

    history = [x[:, P:].clone()] if return_trajectory else None
    if config.compat == "xdlm-authors":
        _authors_remask_loop(x, logits_at, P, config, mask_id, generator, history)
    elif config.sampler == "remask":
        _remask_loop(x, logits_at, P, config, mask_id, generator, history)
    else:
        _ancestral_loop(x, logits_at, P, config, mask_id, V, generator, history)

    sequences = x
    if eos_token_id is not None:
        after_eos = (x[:, P:] == eos_token_id).cumsum(dim=1) > 0  # [B, G] at or after the first EOS
        sequences = x.clone()
        sequences[:, P:] = x[:, P:].masked_fill(after_eos, eos_token_id)
    if stop_strings is not None:
        sequences[:, P:] = _end_at_stop_strings(sequences[:, P:], stop_strings, tokenizer, eos_token_id)
    if not return_trajectory:
        return sequences
    return GenerateOutput(sequences=sequences, trajectory=_trajectory(history, mask_id))


def _window_logits(model, ids, attention_mask, start: int, end: int, cache: str = "none", past=None):
    """(logits [B, end - start, V] of canvas positions [start, end), the KV cache for the next step) from one
    forward. Without `past` the whole canvas runs (its keys and values kept unless cache is "none"); with it, only
    the span the cache mode recomputes, [start, L) for "prefix" or [start, end) for "dual", runs against the cached
    keys and values of the rest (the span's are updated in place). A backbone runs its LM head on the window only
    (logits_to_keep), so the prompt's [B, P, V] logits are never formed; other models are sliced."""
    if not is_backbone(model):
        return model(ids, attention_mask=attention_mask).logits[:, start:end], None
    if past is None:
        out = model(ids, attention_mask=attention_mask, use_cache=cache != "none", logits_to_keep=slice(start, end))
        return out.logits, out.cache
    span_end = end if cache == "dual" else ids.shape[1]
    out = model(ids[:, start:span_end], attention_mask=attention_mask, past_key_values=past,
                cache_position=torch.arange(start, span_end, device=ids.device), logits_to_keep=slice(0, end - start))
    return out.logits, past


def _remask_loop(x, logits_at, P, config, mask_id, generator, history):
    """The remasking sampler in place on the canvas x [B, L]. The window of positions a step may change is the
    current block, or with k1 > 0 and no cache all generated positions up to the block's end (refinement of earlier
    blocks; a cache holds their keys and values, so they are final). Each step fills ceil(masks left / steps left)
    masks of the block (the even split, remainder first), or with a threshold every mask more confident than it if
    that is more; a block ends early once no row has a mask left in it, and a row without one is left unchanged."""
    B = x.shape[0]
    k1, block_length, threshold = config.k1, config.block_length, config.threshold
    steps_per_block = config.steps // config.num_blocks
    for block in range(config.num_blocks):
        end = P + (block + 1) * block_length
        start = P if k1 > 0 and config.cache == "none" else end - block_length
        if block == 0 or config.refine_budget == "block":  # the budget's count starts (again)
            filled = torch.zeros(B, dtype=torch.long, device=x.device)  # [B] fills counted for the budget
            refined = torch.zeros_like(filled)  # [B] rewrites counted against the budget
        for i in range(steps_per_block):
            xw = x[:, start:end]  # [B, W] view of the window
            is_mask = xw == mask_id  # only the current block still has masks
            masks_left = is_mask.sum(dim=1)  # [B]
            if threshold is not None and i > 0 and not bool(masks_left.any()):
                break  # every row finished the block early
            x0, conf, p_cur, log_conf = _propose(logits_at(start, end, refresh=i == 0), xw, config.temperature,
                                               generator)
            if config.remasking == "low_confidence":
                score = log_conf  # conf's order, without its float32 ties at 1
            else:
                score = torch.rand(conf.shape, generator=generator, device=conf.device)
            n_fill = -(-masks_left // (steps_per_block - i))  # [B] ceil: the fixed schedule's share
            if threshold is not None:
                n_fill = torch.maximum(n_fill, (is_mask & (conf > threshold)).sum(dim=1))
            fill = _top_k_per_row(score, is_mask, n_fill)
            new = torch.where(fill, x0, xw)
            filled += fill.sum(dim=1)
            if k1 > 0:
                budget = _refine_budget(k1, filled, refined, xw.shape[1], config.refine_budget == "block" and i == 0)
                can = ~is_mask & (x0 != xw) & (conf >= p_cur) & (masks_left > 0)[:, None]
                refine = _top_k_per_row(log_conf, can, budget)
                new = torch.where(refine, x0, new)
                refined += refine.sum(dim=1)
            xw.copy_(new)
            if history is not None:
                history.append(x[:, P:].clone())


def _authors_remask_loop(x, logits_at, P, config, mask_id, generator, history):
    """The XDLM authors' remasking sampler (their generate_xdm, and generate_mdm at k1 = 0) in place on x [B, L],
    quirks kept (docs/evaluation.md). Every step runs the whole canvas; x0 is the argmax over all ids (mask id
    included) of the logits, or at temperature > 0 of exp(logits) / (-log u)^temperature with u a float64 uniform
    over the whole [B, L, V]; confidences are softmax probabilities in the logits' dtype. Candidates are all
    positions before the block's end: masks are filled with a fixed even split of the block over its steps, and
    every other position (prompt and padding included) whose x0 differs and is at least as probable may be
    rewritten, most confident first, within floor(k1 / (1 - k1) * fills scheduled so far) rewrites of the block
    (float32 arithmetic, none at its first step). Each row's picks are one torch.topk over its whole canvas, as
    theirs: which of tied confidences topk takes depends on the slice it is given, and bf16 probabilities tie."""
    B, L = x.shape
    k1, block_length = config.k1, config.block_length
    steps_per_block = config.steps // config.num_blocks
    fills = [block_length // steps_per_block + (i < block_length % steps_per_block) for i in range(steps_per_block)]
    for block in range(config.num_blocks):
        end = P + (block + 1) * block_length
        scheduled = torch.zeros((), dtype=torch.long)  # fills scheduled so far in this block
        refined = torch.zeros(B, dtype=torch.long, device=x.device)  # [B] rewrites so far in this block
        for i in range(steps_per_block):
            logits = logits_at(0, L, refresh=True)  # [B, L, V] in the model's dtype
            if config.temperature == 0:
                x0 = logits.argmax(dim=-1)  # [B, L]
            else:
                u = torch.rand(logits.shape, generator=generator, dtype=torch.float64, device=x.device)
                x0 = (logits.double().exp() / (-torch.log(u)) ** config.temperature).argmax(dim=-1)
            probs = logits.softmax(dim=-1)  # the model's dtype
            conf = probs.gather(-1, x0[..., None]).squeeze(-1)  # [B, L]
            p_cur = probs.gather(-1, x[..., None]).squeeze(-1)  # [B, L]
            conf[:, end:] = float("-inf")
            is_mask = x == mask_id
            fill_score = conf.masked_fill(~is_mask, float("-inf"))
            can = ~is_mask & (x0 != x) & (conf >= p_cur)
            refine_score = conf.masked_fill(~can, float("-inf"))
            scheduled += fills[i]
            n_refine = torch.zeros_like(refined)
            if k1 > 0 and i > 0:
                allowed = (scheduled * k1 / (1 - k1)).int()  # float32 rounding, truncated
                n_refine = torch.minimum(can.sum(dim=1), allowed - refined)
                refined += n_refine
            transfer = torch.zeros_like(is_mask)
            for b in range(B):  # one topk per row on its whole canvas: the tie order depends on the slice and k
                transfer[b, fill_score[b].topk(fills[i]).indices] = True
                transfer[b, refine_score[b].topk(int(n_refine[b])).indices] = True
            x.copy_(torch.where(transfer, x0, x))
            if history is not None:
                history.append(x[:, P:].clone())


def _refine_budget(k1, filled, refined, width, first_of_block) -> torch.Tensor:
    """Rewrites allowed this step [B]: floor(k1 / (1 - k1) * filled) - refined, where `filled` [B] counts the fills
    so far (this step's included) and `refined` [B] the rewrites so far, both since the count last started;
    unlimited (the window width) at k1 = 1; none at a block's first step under the "block" rule."""
    if first_of_block:
        return torch.zeros_like(refined)
    if k1 == 1:
        return torch.full_like(refined, width)
    return torch.floor(k1 / (1 - k1) * filled.double() + 1e-9).long() - refined


def _ancestral_loop(x, logits_at, P, config, mask_id, V, generator, history):
    """The ancestral sampler in place on x [B, L]: prior draw, then `steps` posterior steps alpha(t_i) -> alpha(t_i+1)
    on the uniform grid t_i = 1 - i/steps of the config's schedule (alpha = i/steps for the linear one)."""
    B, steps, gen_length = x.shape[0], config.steps, config.gen_length
    x[:, P:] = prior_sample((B, gen_length), config.k1, mask_id, V, generator=generator, device=x.device)
    if history is not None:
        history[0] = x[:, P:].clone()
    # The linear schedule's first step starts just above alpha = 0, where reverse_step_probs's domain (0, 1]
    # begins: at 1e-9 the posterior differs from its alpha -> 0 limit by ~1e-9.
    t = torch.linspace(1, 0, steps + 1, dtype=torch.float64, device=x.device)  # [steps + 1]
    alphas = get_schedule(config.schedule).alpha(t).clamp_(min=1e-9)
    for i in range(steps):
        logits = logits_at(P, x.shape[1], refresh=i == 0)  # [B, G, V]; a cache holds the prompt's keys and values
        if config.top_p is not None:
            logits = _nucleus(logits, config.top_p)
        x[:, P:] = ancestral_step(logits, x[:, P:], alphas[i].expand(B), alphas[i + 1].expand(B), config.k1,
                                  mask_id, generator)
        if history is not None:
            history.append(x[:, P:].clone())


def ancestral_step(logits, z_t, alpha_t, alpha_s, k1, mask_id, generator=None) -> torch.Tensor:
    """One posterior draw z_s ~ reverse_step_probs(logits, z_t, alpha_t, alpha_s, k1, mask_id): [B, G] ids
    (alpha_t, alpha_s: tensors [B] or [B, G], as reverse_step_probs takes them)."""
    probs = reverse_step_probs(logits, z_t, alpha_t, alpha_s, k1, mask_id)  # [B, G, V]
    return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).view(z_t.shape)


def _propose(logits, current, temperature, generator):
    """Candidate tokens x0 = argmax(logits + temperature * Gumbel), their probability p(x0) under softmax(logits),
    the probability of the current tokens p(current) (0 at masks: banned ids are already -inf), and log p(x0), the
    ranking key. log p(x0) = -log1p(rest / e(x0)), with e = exp(logit - max) and `rest` the sum of e over the other
    ids, summed directly: near-certain candidates keep their true order there, where p(x0) rounds to 1 in float32
    once the logit gap exceeds ~17 (float64: ~37) and would tie; it is float64, so uncertain ones keep p's precision.
    logits [B, W, V], current [B, W] -> x0, conf, p_cur [B, W] (float32), log_conf [B, W] (float64).

    The normaliser is computed in place in `logits`, which is consumed: over V = 126k a temporary [B, W, V] per
    step costs as much as the reductions themselves (float32 logits are overwritten, others are upcast once)."""
    if temperature == 0:
        row_max, x0 = logits.max(dim=-1)  # [B, W]
        top = row_max
    else:
        row_max = logits.amax(dim=-1)  # [B, W]
        x0 = _gumbel(logits.shape, generator, logits.device).mul_(temperature).add_(logits).argmax(dim=-1)
        top = logits.gather(-1, x0[..., None]).squeeze(-1)
    cur = logits.gather(-1, current[..., None]).squeeze(-1)
    row_max, top, cur = row_max.float()[..., None], top.float(), cur.float()
    shifted = logits.float() if logits.dtype != torch.float32 else logits
    shifted.sub_(row_max).exp_().scatter_(-1, x0[..., None], 0.0)
    rest = shifted.sum(dim=-1)  # [B, W] sum of exp(logits - max) over the ids other than x0
    row_max = row_max.squeeze(-1)
    top = (top - row_max).exp()
    norm = top + rest
    log_conf = torch.log1p(rest.double() / top).neg_().clamp_(min=torch.finfo(torch.float64).min)  # finite: an
    # underflowed candidate (p < 1e-38, Gumbel-drawn) still outranks the ineligible positions (-inf)
    return x0, top / norm, (cur - row_max).exp() / norm, log_conf


def _gumbel(shape, generator, device) -> torch.Tensor:
    """Standard Gumbel noise in float32 with a 48-bit uniform: -log(-log1p(-w)), w = 1 - u. A plain float32
    uniform (24 bits) truncates the Gumbel tail at 16.6, which biases large-vocabulary sampling towards low
    temperature (arXiv:2409.02908); two draws push the tail to 33 at float32 cost (float64 reaches 36.7)."""
    w = torch.rand(shape, generator=generator, device=device)
    w.add_(torch.rand(shape, generator=generator, device=device), alpha=2.0**-24).clamp_(2.0**-48, 1 - 2.0**-24)
    return w.neg_().log1p_().neg_().log_().neg_()


def _top_k_per_row(score, eligible, k) -> torch.Tensor:
    """Boolean [B, W]: the k[b] highest-scoring eligible positions of each row (all of them when fewer), as one
    batched sort with a rank comparison. score [B, W], eligible [B, W] bool, k [B] long."""
    score = score.masked_fill(~eligible, float("-inf"))
    order = score.argsort(dim=-1, descending=True, stable=True)  # [B, W]
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(-1, order, positions)  # rank[b, w]: place of w in row b's order
    return eligible & (rank < k[:, None])


def _nucleus(logits, top_p) -> torch.Tensor:
    """Keep the smallest set of most probable ids whose probability reaches top_p; the rest -> -inf. [B, G, V]."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.float().softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # probability mass of the more probable ids
    drop = torch.zeros_like(before, dtype=torch.bool).scatter_(-1, order, before >= top_p)  # mass before >= top_p
    return logits.masked_fill(drop, float("-inf"))


def _trajectory(history, mask_id) -> Trajectory:
    tokens = torch.stack(history)  # [S + 1, B, G]
    prev, new = tokens[:-1], tokens[1:]
    was_mask, is_mask = prev == mask_id, new == mask_id
    return Trajectory(
        tokens=tokens,
        filled=was_mask & ~is_mask,
        refined=~was_mask & ~is_mask & (new != prev),
        remasked=~was_mask & is_mask,
        mask_id=mask_id,
    )


def _end_at_stop_strings(gen, stop_strings, tokenizer, eos_id) -> torch.Tensor:
    """[B, G] generated ids -> the same ids with every token after the one that completes a row's first stop string
    set to eos_id. Post-processing, once per call: each row with a hit is bisected for the shortest prefix whose
    decoded text contains a stop string (decoding a longer prefix only appends text)."""
    out = gen.clone()
    for b, row in enumerate(gen.tolist()):
        def hit(k: int) -> bool:
            text = tokenizer.decode(row[:k])
            return any(s in text for s in stop_strings)

        if not hit(len(row)):
            continue
        lo, hi = 1, len(row)  # the shortest hitting prefix lies in [lo, hi]
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if hit(mid) else (mid + 1, hi)
        out[b, lo:] = eos_id
    return out


def truncate_at_stop(texts: Sequence[str], stop_strings: Sequence[str]) -> list[str]:
    """Cut each decoded text before the earliest occurrence of any stop string (lm-eval's `until`)."""
    out = []
    for text in texts:
        cut = min((i for i in (text.find(s) for s in stop_strings if s) if i >= 0), default=len(text))
        out.append(text[:cut])
    return out


def _check_stop(stop_strings, tokenizer, eos_token_id):
    if stop_strings is None:
        return
    if isinstance(stop_strings, str) or not all(isinstance(t, str) and t for t in stop_strings):
        raise ValueError(f"stop_strings={stop_strings!r} must be a list of non-empty strings, e.g. ['\\n\\n'].")
    if tokenizer is None:
        raise ValueError("stop_strings needs the tokenizer that decodes the ids: pass tokenizer=.")
    if eos_token_id is None:
        raise ValueError("stop_strings end a row with EOS, but neither eos_token_id nor the tokenizer's "
                         "eos_token_id is set; pass eos_token_id=.")


def _check_args(input_ids, attention_mask, config, mask_id, V, suppress_tokens):
    """Reject bad tensors and ids before any work starts, naming the value and the fix (the settings were checked
    by SamplerConfig)."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.long:
        raise TypeError("input_ids must be a LongTensor [batch, prompt_length]; tokenize with return_tensors='pt'.")
    if input_ids.shape[0] == 0:
        raise ValueError("input_ids has no rows (batch of 0 prompts); pass at least one prompt.")
    if mask_id is None:
        raise ValueError("mask_id is None and the model config has no mask_token_id; pass mask_id=.")
    if V is not None and not 0 <= mask_id < V:
        raise ValueError(f"mask_id={mask_id} is outside the model's ids [0, {V}); pass the model's mask token id.")
    if config.sampler == "ancestral" and V is None:
        raise ValueError("the ancestral sampler needs the number of ids V: the model config has neither "
                         "embedding_size nor vocab_size.")
    bad = [t for t in (suppress_tokens or ()) if not isinstance(t, int) or (V is not None and not 0 <= t < V)]
    if bad:
        raise ValueError(f"suppress_tokens contains {bad[0]!r}, not a token id in [0, {V}).")
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                             f"{tuple(input_ids.shape)}; pass the tokenizer's mask for the same batch.")
        am = attention_mask.bool()
        if bool((am[:, 1:] < am[:, :-1]).any()):
            raise ValueError("attention_mask is not left-padded (a 0 follows a 1); tokenize with "
                             "tokenizer.padding_side = 'left'.")
        if bool((input_ids[~am] == mask_id).any()):
            raise ValueError(f"the prompt is padded with the mask id {mask_id}; pad with the tokenizer's pad id "
                             f"(e.g. EOS), never with the mask.")
    real = input_ids if attention_mask is None else input_ids[attention_mask.bool()]
    if bool((real == mask_id).any()):
        raise ValueError(f"the prompt contains the mask id {mask_id}; the sampler would overwrite it. Remove it "
                         f"from the prompt (use the tokenizer's pad id for padding).")


def add_sampler_arguments(parser: argparse.ArgumentParser, **defaults) -> None:
    """One option per SamplerConfig field (--steps, --gen_length, --sampler, ...), typed from its annotation. An
    option not given takes the checkpoint's default (config.json `sampling`), else `defaults`, else the
    dataclass's. Read them back with sampler_config_from_arguments."""
    group = parser.add_argument_group("sampler settings", "SamplerConfig's fields (docs/sampling.md); each defaults "
                                      "to the checkpoint's, else to the value shown")
    meaning = {"k1": "the model's config.k1", "block_length": "one block", "top_p": "off", "threshold": "off",
               "schedule": "the model's config.schedule"}
    for f in fields(SamplerConfig):
        kind = f.type
        if isinstance(kind, types.UnionType):  # `int | None` -> int
            (kind,) = [k for k in kind.__args__ if k is not type(None)]
        default = defaults.get(f.name, f.default)
        shown = meaning[f.name] if default is None else default
        group.add_argument(f"--{f.name}", type=kind, default=None, choices=CHOICES.get(f.name),
                           help=f"default: {shown}")
    parser.set_defaults(sampler_defaults=defaults)


def sampler_config_from_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace,
                                  model_config=None) -> SamplerConfig:
    """The SamplerConfig of parsed add_sampler_arguments options over the checkpoint's defaults (checkpoint_sampler);
    an invalid combination is a usage error."""
    given = {f.name: getattr(args, f.name) for f in fields(SamplerConfig) if getattr(args, f.name) is not None}
    try:
        return checkpoint_sampler(model_config, defaults=args.sampler_defaults, **given)
    except ValueError as err:
        parser.error(str(err))


def main(argv: list[str] | None = None, prog: str | None = None) -> list[str]:
    """`xdlm sample`: generate after each prompt with a saved checkpoint and print prompt + continuation; returns
    the continuations."""
    from .checkpoint import load_checkpoint
    from .cli import UsageError

    parser = argparse.ArgumentParser(prog=prog, description="Generate text after prompts with a trained checkpoint.")
    parser.add_argument("--model", required=True, help="checkpoint folder (a training run's output_dir) or Hub id")
    parser.add_argument("--prompt", action="append", default=None,
                        help="text to continue (repeatable: one row each, left-padded; default: one empty prompt)")
    parser.add_argument("--chat", action="store_true",
                        help="send each prompt as a user message through the tokenizer's chat template (instruction-"
                             "tuned models: LLaDA-8B-Instruct, LLaDA-1.5, LLaDA-MoE-7B-A1B-Instruct) and print the "
                             "reply alone")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    add_sampler_arguments(parser)
    args = parser.parse_args(argv)
    prompts = args.prompt or [""]

    model, tokenizer = load_checkpoint(args.model, args.device, getattr(torch, args.dtype))
    config = sampler_config_from_arguments(parser, args, model.config)
    if args.chat and not tokenizer.chat_template:
        parser.error(f"--chat needs a tokenizer with a chat template, and {args.model}'s has none (a base model?): "
                     f"leave --chat out to continue the prompt as text.")
    inputs = prompts
    if args.chat:  # the rendered conversation starts with bos itself
        inputs = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                tokenize=False) for p in prompts]
    enc = tokenizer(inputs, return_tensors="pt", padding=True, padding_side="left",
                    add_special_tokens=not args.chat).to(args.device)
    P, limit = enc.input_ids.shape[1], model.config.max_sequence_length
    longest = "the prompt has" if len(prompts) == 1 else "the longest prompt has"
    if P >= limit:
        raise UsageError(f"{longest} {P} tokens, and the model holds max_sequence_length={limit} tokens in all: "
                         f"shorten it to fewer than {limit} tokens, to leave room for the generated text.")
    if P + config.gen_length > limit:
        raise UsageError(f"{longest} {P} tokens; with --gen_length {config.gen_length} that exceeds the model's "
                         f"max_sequence_length={limit}: pass --gen_length {limit - P} or less, or shorten the prompt.")
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    out = generate(model, enc.input_ids, enc.attention_mask, config, eos_token_id=tokenizer.eos_token_id,
                   generator=generator)
    texts = tokenizer.batch_decode(out[:, P:], skip_special_tokens=True)
    for prompt, text in zip(prompts, texts):
        print(text if args.chat else prompt + text, flush=True)
    return texts
