"""Monte-Carlo ELBO of target tokens given the rest of a sequence, for diffusion LMs (lm-eval, perplexity).

A diffusion LM has no exact likelihood. We report the evidence lower bound log p(target | rest) >= -NELBO, with
the continuous-time NELBO = integral over alpha in (0, 1] of E_{z ~ q_alpha}[sum over targets of L(alpha, z)],
where L is diffusion.xdlm_loss. The bound does not depend on the schedule: only the range of alpha matters.
Only target positions are noised; the rest (e.g. an lm-eval context) stays clean. Two unbiased estimators:

- "xdlm" (any k1): under alpha = 1 - t, t ~ U(0, 1), the number n of corrupted targets is uniform on {0..T}
  (T = number of targets), and given n, t ~ Beta(n + 1, T - n + 1). We stratify n over {1..T} across a row's
  samples and corrupt n random targets with draws from the prior r (diffusion.prior_sample). Then t is drawn from
  Beta(n, T - n + 1) (an order statistic of T uniforms), which absorbs the 1/t of the loss; plain t ~ U(0, 1)
  would weight rare single corruptions by 1/t and make the samples heavy-tailed. The value is
  (T / n) t sum L(t, z). The n = 0 term (nothing corrupted, z = x; zero when k1 = 0) is added to every sample
  with weight 1 / (T + 1), from a forward of the clean sequence and its own t ~ Beta(1, T + 1).
  At k1 = 0 this is LLaDA's estimator.
- "mdlm" (LLaDA's estimator; pure masking, ignores k1): l uniform on {1..T}, stratified; exactly l random targets
  masked; value = (T / l) * sum of -log p(x) over the masked targets.

    nelbo = nelbo_samples(model, input_ids, target_mask, estimator="xdlm", k1=0.1, mc_num=128)  # [N, mc_num]
    loglik = -nelbo.mean(-1)                                                                     # [N]

The model must follow llada_xdlm's forward contract (`logits_to_keep=` picks the positions the LM head runs on, as
in transformers): the head runs only on the columns that hold targets.
"""

import torch

from llada_xdlm.diffusion import prior_sample, xdlm_loss

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
    mask_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample NELBO of each row's target tokens (nats, summed over targets): float64 [N, mc_num].

    input_ids [N, L] clean tokens; target_mask [N, L] bool, True where a token is scored (each row needs one);
    attention_mask [N, L] (1 = real token) for padded rows. The N x mc_num noisy copies are forwarded
    `batch_size` at a time. mask_id defaults to model.config.mask_token_id; generator (on the inputs' device)
    makes the draws reproducible.
    """
    mask_id = model.config.mask_token_id if mask_id is None else mask_id
    _check_args(input_ids, target_mask, attention_mask, estimator, k1, mc_num, batch_size, mask_id)
    device = input_ids.device
    N, L = input_ids.shape
    n_targets = target_mask.sum(-1)  # [N]
    counts = _stratified_counts(n_targets, mc_num, generator, device).reshape(-1)  # [N * mc_num], in {1..T}
    V = model.get_output_embeddings().weight.shape[0]

    rows = torch.arange(N, device=device).repeat_interleave(mc_num)  # [N * mc_num]
    out = torch.empty(N * mc_num, dtype=torch.float64, device=device)
    for start in range(0, N * mc_num, batch_size):
        r = rows[start : start + batch_size]
        n, T = counts[start : start + batch_size], n_targets[r]  # [b]
        clean, targets = input_ids[r], target_mask[r]  # [b, L]
        chosen = _choose(targets, n, generator)  # [b, L]: exactly n[i] random targets of row i
        if estimator == "xdlm":
            noise = prior_sample(clean.shape, k1, mask_id, V, generator=generator, device=device)
            noisy = torch.where(chosen, noise, clean)
        else:
            noisy = torch.where(chosen, mask_id, clean)
        mask = None if attention_mask is None else attention_mask[r]
        logits, lo, hi = _target_logits(model, noisy, mask, targets)  # [b, S, V]
        clean, noisy, targets = clean[:, lo:hi], noisy[:, lo:hi], targets[:, lo:hi]
        if estimator == "xdlm":
            t = _order_statistic(n, T, generator)  # Beta(n, T - n + 1)
            loss = xdlm_loss(logits, noisy, clean, 1 - t, k1, mask_id, loss_mask=targets)  # [b, S]
            out[start : start + batch_size] = (T / n) * t * loss.double().sum(-1)
        else:
            nll = -_log_probs(logits, mask_id).gather(-1, clean[..., None]).squeeze(-1)  # [b, S]
            masked_nll = torch.where(noisy == mask_id, nll, 0.0) * targets
            out[start : start + batch_size] = (T / n) * masked_nll.double().sum(-1)
    out = out.view(N, mc_num)
    if estimator == "xdlm" and k1 > 0:  # at k1 = 0 a clean token has zero loss
        out += _uncorrupted_term(model, input_ids, target_mask, attention_mask, k1, mask_id, mc_num,
                                 batch_size, generator)
    return out


def loglikelihood(model, input_ids: torch.Tensor, target_mask: torch.Tensor, **kwargs) -> torch.Tensor:
    """The ELBO estimate of log p(targets | rest) per row: float64 [N]; kwargs as in nelbo_samples."""
    return -nelbo_samples(model, input_ids, target_mask, **kwargs).mean(-1)


def _log_probs(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """The model's prediction as log-probabilities in float32, the mask id excluded (p_mask = 0)."""
    logits = logits.float()
    logits[..., mask_id] = float("-inf")
    return logits.log_softmax(-1)


def _target_logits(model, noisy, attention_mask, targets):
    """LM-head logits on the column span [lo, hi) that holds the targets only: ([b, S, V], lo, hi)."""
    cols = targets.any(0).nonzero()
    lo, hi = int(cols[0]), int(cols[-1]) + 1
    return model(noisy, attention_mask=attention_mask, logits_to_keep=slice(lo, hi)).logits, lo, hi


def _uncorrupted_term(model, input_ids, target_mask, attention_mask, k1, mask_id, mc_num, batch_size,
                      generator) -> torch.Tensor:
    """[N, mc_num] float64: the part of the bound where no target is corrupted (z = x), sum L(t, x) / (T + 1) with
    t ~ Beta(1, T + 1) drawn by its inverse CDF 1 - (1 - u)^(1 / (T + 1)), u stratified over a row's samples."""
    N = input_ids.shape[0]
    n_targets = target_mask.sum(-1)  # [N]
    u = _stratified_uniform(N, mc_num, generator, input_ids.device)  # [N, mc_num]
    t_all = (1 - (1 - u) ** (1 / (n_targets[:, None] + 1.0))).reshape(-1)
    rows = torch.arange(N, device=input_ids.device).repeat_interleave(mc_num)
    out = torch.empty(N * mc_num, dtype=torch.float64, device=input_ids.device)
    for start in range(0, N * mc_num, batch_size):
        r = rows[start : start + batch_size]
        first, last = int(r[0]), int(r[-1]) + 1  # the few rows this chunk of samples belongs to
        mask = None if attention_mask is None else attention_mask[first:last]
        logits, lo, hi = _target_logits(model, input_ids[first:last], mask, target_mask[first:last])
        clean, targets = input_ids[r, lo:hi], target_mask[r, lo:hi]
        t = t_all[start : start + batch_size]
        loss = xdlm_loss(logits[r - first], clean, clean, 1 - t, k1, mask_id, loss_mask=targets)  # [b, S]
        out[start : start + batch_size] = loss.double().sum(-1) / (n_targets[r] + 1)
    return out.view(N, mc_num)


def _stratified_uniform(N: int, mc_num: int, generator, device) -> torch.Tensor:
    """[N, mc_num] float64 uniforms on [0, 1), one in each stratum [j / mc_num, (j + 1) / mc_num) of a row."""
    offset = torch.rand(N, mc_num, generator=generator, device=device, dtype=torch.float64)
    return (torch.arange(mc_num, device=device) + offset) / mc_num


def _stratified_counts(n_targets: torch.Tensor, mc_num: int, generator, device) -> torch.Tensor:
    """[N, mc_num] counts uniform on {1..T} per sample, stratified over each row's samples (float64)."""
    u = _stratified_uniform(len(n_targets), mc_num, generator, device)
    T = n_targets[:, None].double()
    return (u * T).floor().clamp(max=T - 1) + 1


def _choose(targets: torch.Tensor, counts: torch.Tensor, generator) -> torch.Tensor:
    """[b, L] bool: counts[i] uniformly chosen target positions of row i."""
    score = torch.rand(targets.shape, generator=generator, device=targets.device).masked_fill(~targets, 2.0)
    rank = score.argsort(-1).argsort(-1)  # targets come first, in random order
    return rank < counts[:, None]


def _order_statistic(k: torch.Tensor, m: torch.Tensor, generator) -> torch.Tensor:
    """[b] float64: the k-th smallest of m uniforms per row, i.e. a Beta(k, m - k + 1) draw, kept below 1 so that
    alpha = 1 - t stays positive."""
    width = int(m.max())
    fresh = torch.rand(len(k), width, generator=generator, device=k.device, dtype=torch.float64)  # [b, width]
    columns = torch.arange(width, device=k.device)
    draws = torch.where(columns < m[:, None], fresh, 2.0).sort(-1).values
    return draws.gather(-1, (k.long() - 1)[:, None]).squeeze(-1).clamp(max=1 - 1e-9)


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
