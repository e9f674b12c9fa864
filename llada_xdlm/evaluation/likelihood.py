"""Monte-Carlo ELBO of target tokens given the rest of a sequence, for diffusion LMs (lm-eval, perplexity).

A diffusion LM has no exact likelihood; we report the evidence lower bound log p(target | rest) >= -NELBO,
estimated by noising ONLY the target positions (the rest, e.g. an lm-eval context, is never noised) and scoring
the model's predictions there. Two unbiased estimators of the same bound (they agree when k1 = 0):

- "xdlm": t ~ U(eps, 1) stratified over the samples of a row; z_t from diffusion.forward_process (mask and uniform
  noise at mixing ratio k1); value = weight(t) * sum over targets of diffusion.xdlm_loss. Any k1 in [0, 1].
- "mdlm": LLaDA's estimator for pure masking: l ~ U{1..T} stratified over the samples of a row (T = number of
  target tokens), exactly l uniformly chosen targets masked; value = (T / l) * sum over masked targets of
  -log p(x). Lower variance than random t at k1 = 0; it ignores k1.

    nelbo = nelbo_samples(model, input_ids, target_mask, estimator="xdlm", k1=0.1, mc_num=128)  # [N, mc_num]
    loglik = -nelbo.mean(-1)                                                                     # [N]

The model must follow llada_xdlm's forward contract (compute_logits=False -> last_hidden_state, and an LM head
from get_output_embeddings()); the head runs only on the columns that hold targets.
"""

import torch

from llada_xdlm.diffusion import forward_process, get_schedule, sample_t, xdlm_loss

ESTIMATORS = ("xdlm", "mdlm")


@torch.no_grad()
def nelbo_samples(
    model,
    input_ids: torch.Tensor,
    target_mask: torch.Tensor,
    *,
    estimator: str = "xdlm",
    k1: float = 0.0,
    mc_num: int = 128,
    batch_size: int = 32,
    attention_mask: torch.Tensor | None = None,
    schedule: str = "linear",
    mask_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample NELBO of each row's target tokens (nats, summed over targets): float64 [N, mc_num].

    input_ids [N, L] clean tokens; target_mask [N, L] bool, True where a token is scored (each row needs one);
    attention_mask [N, L] (1 = real token) for padded rows. The N x mc_num noisy copies are forwarded
    `batch_size` at a time. mask_id defaults to model.config.mask_token_id; schedule names a diffusion schedule
    (LLaDA: "linear"). generator (on the inputs' device) makes the draws reproducible.
    """
    mask_id = model.config.mask_token_id if mask_id is None else mask_id
    _check_args(input_ids, target_mask, attention_mask, estimator, k1, mc_num, batch_size, mask_id)
    device = input_ids.device
    N, L = input_ids.shape
    n_targets = target_mask.sum(-1)  # [N]
    draws = (
        _stratified_t(N, mc_num, generator, device)
        if estimator == "xdlm"
        else _stratified_counts(n_targets, mc_num, generator, device)
    )  # [N, mc_num]: t in (0, 1], or the number of targets to mask
    sched = get_schedule(schedule)
    head = model.get_output_embeddings()
    V = head.weight.shape[0]

    rows = torch.arange(N, device=device).repeat_interleave(mc_num)  # [N * mc_num]
    draws = draws.reshape(-1)
    out = torch.empty(N * mc_num, dtype=torch.float64, device=device)
    for start in range(0, N * mc_num, batch_size):
        r = rows[start : start + batch_size]
        draw = draws[start : start + batch_size]  # [b]
        clean, targets = input_ids[r], target_mask[r]  # [b, L]
        if estimator == "xdlm":
            alpha = sched.alpha(draw)  # [b]
            noisy = forward_process(clean, alpha, k1, mask_id, V, generator=generator, keep_mask=~targets)
        else:
            noisy = _mask_exactly(clean, targets, draw, mask_id, generator)
        mask = None if attention_mask is None else attention_mask[r]
        hidden = model(noisy, attention_mask=mask, compute_logits=False).last_hidden_state  # [b, L, D]
        cols = targets.any(0).nonzero()
        lo, hi = int(cols[0]), int(cols[-1]) + 1  # the columns holding targets
        logits = head(hidden[:, lo:hi])  # [b, S, V]
        clean, noisy, targets = clean[:, lo:hi], noisy[:, lo:hi], targets[:, lo:hi]
        if estimator == "xdlm":
            loss = xdlm_loss(logits, noisy, clean, alpha, k1, mask_id, loss_mask=targets)  # [b, S]
            loss = loss * sched.weight(draw)[:, None]
        else:
            masked = noisy == mask_id
            nll = -_log_probs(logits, mask_id).gather(-1, clean[..., None]).squeeze(-1)  # [b, S]
            loss = torch.where(masked, nll, 0.0) * (n_targets[r] / draw)[:, None]
        out[start : start + batch_size] = (loss.double() * targets).sum(-1)
    return out.view(N, mc_num)


def loglikelihood(model, input_ids: torch.Tensor, target_mask: torch.Tensor, **kwargs) -> torch.Tensor:
    """The ELBO estimate of log p(targets | rest) per row: float64 [N]; kwargs as in nelbo_samples."""
    return -nelbo_samples(model, input_ids, target_mask, **kwargs).mean(-1)


def _log_probs(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """The model's prediction as log-probabilities in float32, the mask id excluded (p_mask = 0)."""
    logits = logits.float()
    logits[..., mask_id] = float("-inf")
    return logits.log_softmax(-1)


def _stratified_t(N: int, mc_num: int, generator, device) -> torch.Tensor:
    """[N, mc_num] diffusion times: each row stratified (one draw per 1/mc_num of the range)."""
    return torch.stack([sample_t(mc_num, antithetic=True, generator=generator, device=device) for _ in range(N)])


def _stratified_counts(n_targets: torch.Tensor, mc_num: int, generator, device) -> torch.Tensor:
    """[N, mc_num] numbers of targets to mask, uniform on {1..T} per sample, stratified over each row's samples."""
    offset = torch.rand(len(n_targets), 1, generator=generator, device=device)  # [N, 1]
    u = (torch.arange(mc_num, device=device) + offset) / mc_num  # [N, mc_num], one point per stratum of (0, 1)
    T = n_targets[:, None]
    return torch.ceil(u * T).clamp(min=1).minimum(T).double()


def _mask_exactly(clean, targets, counts, mask_id, generator) -> torch.Tensor:
    """Mask `counts[i]` uniformly chosen target positions of row i; everything else stays clean."""
    score = torch.rand(clean.shape, generator=generator, device=clean.device).masked_fill(~targets, 2.0)
    rank = score.argsort(-1).argsort(-1)  # [b, L]: targets come first, in random order
    return torch.where(rank < counts[:, None], mask_id, clean)


def _check_args(input_ids, target_mask, attention_mask, estimator, k1, mc_num, batch_size, mask_id) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r} is not one of {ESTIMATORS}.")
    if not 0.0 <= k1 <= 1.0:
        raise ValueError(f"k1={k1} must be in [0, 1] (0 = pure masking, 1 = pure uniform noise).")
    if mc_num < 1 or batch_size < 1:
        raise ValueError(f"mc_num={mc_num} and batch_size={batch_size} must be >= 1.")
    if input_ids.dim() != 2 or target_mask.shape != input_ids.shape or target_mask.dtype != torch.bool:
        raise ValueError(
            f"input_ids must be [N, L] and target_mask a bool tensor of the same shape; got "
            f"{tuple(input_ids.shape)} and {target_mask.dtype} {tuple(target_mask.shape)}."
        )
    if not bool(target_mask.any(-1).all()):
        raise ValueError("every row of target_mask needs at least one True (a token to score).")
    if bool((input_ids[target_mask] == mask_id).any()):
        raise ValueError(f"a target token equals the mask id {mask_id}; only clean tokens can be scored.")
    if attention_mask is not None and bool((attention_mask[target_mask] == 0).any()):
        raise ValueError("target_mask marks padding (attention_mask == 0) as a target; score real tokens only.")
