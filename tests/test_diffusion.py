"""XDLM math against a brute-force oracle (explicit V x V transition matrices, Bayes posteriors, KL limit)."""

import math

import pytest
import torch

from llada_xdlm.diffusion import (
    LinearSchedule,
    LogLinearSchedule,
    forward_process,
    get_schedule,
    prior_sample,
    reverse_step_probs,
    sample_t,
    xdlm_loss,
)

V, MASK = 17, 16
K1S = [0.0, 1e-3, 0.1, 0.5, 0.9, 1.0]
ALPHAS = [1e-3, 1e-2, 0.1, 0.5, 0.9, 0.999]


# ---------------------------------------------------------------------------------------------- the oracle


def stationary(k1, mask_id, vocab):
    r = torch.full((vocab,), k1 / vocab, dtype=torch.float64)
    if mask_id is not None:
        r[mask_id] += 1 - k1
    return r


def transition(a, r):
    """Q[i, j] = q(z_t = j | z_s = i) = a [i = j] + (1 - a) r(j), for alpha_t / alpha_s = a."""
    return a * torch.eye(len(r), dtype=torch.float64) + (1 - a) * r[None, :]


def model_probs(logits, mask_id):
    logits = logits.double().clone()
    if mask_id is not None:
        logits[mask_id] = -math.inf
    return logits.softmax(-1)


def bayes_posterior(prior_s, alpha_t, alpha_s, z, r):
    """q(z_s | z_t = z) proportional to q(z_t = z | z_s) q_s(z_s), q_s = prior_s (a row vector [V])."""
    joint = transition(alpha_t / alpha_s, r)[:, z] * prior_s
    return joint / joint.sum()


def kl_over_dalpha(x, z, p, alpha_t, delta, r):
    """KL(q(z_s | z_t, x) || q(z_s | z_t, p)) / (alpha_s - alpha_t), alpha_s = alpha_t + delta."""
    alpha_s = alpha_t + delta
    onehot = torch.zeros_like(p)
    onehot[x] = 1
    q_x = bayes_posterior(onehot @ transition(alpha_s, r), alpha_t, alpha_s, z, r)
    q_p = bayes_posterior(p @ transition(alpha_s, r), alpha_t, alpha_s, z, r)
    ratio = q_p / q_x
    pos = q_x > 0
    s = ratio[pos] - 1  # sum q_x (ratio - 1 - log ratio): the KL as a sum of non-negative terms
    return (q_x[pos] * (s - torch.log1p(s))).sum() / delta + q_p[~pos].sum() / delta


def oracle_loss(x, z, logits, alpha_t, k1, mask_id, vocab):
    """lim_{delta -> 0} KL / delta by Richardson extrapolation over delta0 / 2^k, k = 0..5."""
    r = stationary(k1, mask_id, vocab)
    p = model_probs(logits, mask_id)
    delta0 = 1e-2 * alpha_t * (1 - alpha_t)
    table = [kl_over_dalpha(x, z, p, alpha_t, delta0 / 2**k, r) for k in range(6)]
    for order in range(1, 6):
        table = [(2**order * table[i + 1] - table[i]) / (2**order - 1) for i in range(len(table) - 1)]
    return table[0].item()


def noisy_cases(k1, mask_id):
    """(x, z) pairs with z = x, z = mask, z = another token, where the forward process can produce them."""
    cases = [(3, 3)]
    if mask_id is not None:
        cases.append((3, mask_id))
    if k1 > 0:
        cases.append((3, 7))
    return cases


# ---------------------------------------------------------------------------------------------- loss


@pytest.mark.parametrize("k1", K1S)
def test_loss_equals_bruteforce_kl_limit(k1):
    g = torch.Generator().manual_seed(0)
    for alpha in ALPHAS:
        for x, z in noisy_cases(k1, MASK):
            logits = torch.randn(V, generator=g, dtype=torch.float64) * 2
            want = oracle_loss(x, z, logits, alpha, k1, MASK, V)
            got = xdlm_loss(logits.view(1, 1, V), torch.tensor([[z]]), torch.tensor([[x]]),
                            torch.tensor([alpha], dtype=torch.float64), k1, MASK).item()
            assert abs(got - want) <= 1e-7 * abs(want) + 1e-10, (alpha, x, z, got, want)


def test_udlm_without_mask_id_equals_bruteforce_kl_limit():
    g = torch.Generator().manual_seed(1)
    for alpha in ALPHAS:
        for x, z in [(3, 3), (3, 7), (3, 16)]:
            logits = torch.randn(V, generator=g, dtype=torch.float64)
            want = oracle_loss(x, z, logits, alpha, 1.0, None, V)
            got = xdlm_loss(logits.view(1, 1, V), torch.tensor([[z]]), torch.tensor([[x]]),
                            torch.tensor([alpha], dtype=torch.float64), 1.0, None).item()
            assert abs(got - want) <= 1e-7 * abs(want) + 1e-10, (alpha, x, z, got, want)


def test_loss_at_alpha_one_is_the_clean_limit():
    """alpha = 1 (no noise): z = x and L = r(x) (1 - p_x) / p_x (the alpha -> 1 limit of the closed form)."""
    logits = torch.randn(1, 1, V, dtype=torch.float64)
    k1 = 0.3
    p_x = model_probs(logits[0, 0], MASK)[5]
    got = xdlm_loss(logits, torch.tensor([[5]]), torch.tensor([[5]]), torch.tensor([1.0], dtype=torch.float64), k1, MASK)
    near = xdlm_loss(logits, torch.tensor([[5]]), torch.tensor([[5]]), torch.tensor([1 - 1e-7], dtype=torch.float64), k1, MASK)
    assert torch.allclose(got.squeeze(), k1 / V * (1 - p_x) / p_x, rtol=1e-12)
    assert torch.allclose(got, near, rtol=1e-5)


def random_batch(k1, B=4, L=32, vocab=V, mask_id=MASK, seed=0, dtype=torch.float64, alpha=None):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, L, vocab, generator=g, dtype=dtype) * 2
    clean = torch.randint(0, vocab - 1, (B, L), generator=g)  # never the mask id (the last one)
    if alpha is None:
        alpha = torch.rand(B, generator=g, dtype=torch.float64) * 0.98 + 0.01
    noisy = forward_process(clean, alpha, k1, mask_id, vocab, generator=g)
    return logits, noisy, clean, alpha


@pytest.mark.parametrize("k1", K1S)
def test_loss_nonnegative(k1):
    logits, noisy, clean, alpha = random_batch(k1)
    assert (xdlm_loss(logits, noisy, clean, alpha, k1, MASK) >= 0).all()


@pytest.mark.parametrize("k1", K1S)
def test_loss_zero_at_onehot_prediction(k1):
    _, noisy, clean, alpha = random_batch(k1)
    logits = torch.full((*clean.shape, V), -math.inf, dtype=torch.float64).scatter(-1, clean[..., None], 0.0)
    assert xdlm_loss(logits, noisy, clean, alpha, k1, MASK).abs().max() == 0


def test_k1_zero_is_masked_cross_entropy_over_beta():
    logits, noisy, clean, alpha = random_batch(0.0)
    masked = logits.clone()
    masked[..., MASK] = -math.inf
    ce = torch.nn.functional.cross_entropy(masked.transpose(1, 2), clean, reduction="none")
    want = (noisy == MASK) * ce / (1 - alpha[:, None])
    assert torch.allclose(xdlm_loss(logits, noisy, clean, alpha, 0.0, MASK), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("k1", [0.0, 0.1, 1.0])
def test_gradcheck_float64(k1):
    logits, noisy, clean, alpha = random_batch(k1, B=2, L=6, vocab=9, mask_id=8)
    logits.requires_grad_()
    loss_mask = torch.ones_like(clean, dtype=torch.bool)
    loss_mask[0, :2] = False
    for lm in (None, loss_mask):
        assert torch.autograd.gradcheck(lambda t: xdlm_loss(t, noisy, clean, alpha, k1, 8, loss_mask=lm), (logits,))


def test_gradcheck_float64_chunked_rows(monkeypatch):
    """Several row chunks (CHUNK_ELEMENTS smaller than the batch), with and without a loss mask."""
    monkeypatch.setattr("llada_xdlm.diffusion.CHUNK_ELEMENTS", 3 * 9)
    logits, noisy, clean, alpha = random_batch(0.1, B=2, L=7, vocab=9, mask_id=8)
    logits.requires_grad_()
    loss_mask = torch.rand(2, 7, generator=torch.Generator().manual_seed(0)) < 0.6
    for lm in (None, loss_mask):
        assert torch.autograd.gradcheck(lambda t: xdlm_loss(t, noisy, clean, alpha, 0.1, 8, loss_mask=lm), (logits,))


def test_loss_mask_gives_zero_loss_and_gradient_on_excluded_tokens():
    logits, noisy, clean, alpha = random_batch(0.1, dtype=torch.float32)
    loss_mask = torch.rand(clean.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    clean = torch.where(loss_mask, clean, MASK)  # clean mask ids are fine where excluded
    logits.requires_grad_()
    loss = xdlm_loss(logits, noisy, clean, alpha, 0.1, MASK, loss_mask=loss_mask)
    loss.sum().backward()
    assert (loss[~loss_mask] == 0).all() and (logits.grad[~loss_mask] == 0).all()
    full = xdlm_loss(logits.detach(), noisy, torch.where(loss_mask, clean, 0), alpha, 0.1, MASK)
    assert torch.equal(loss[loss_mask], full[loss_mask])


def test_per_token_alpha_gives_each_token_the_loss_at_its_own_alpha():
    """alpha [B, L], a different value at every token (noisy ids drawn with it): each token's loss equals the loss
    of that token alone, scored with its own alpha as a one-sequence batch."""
    alpha = torch.rand(4, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 0.98 + 0.01
    logits, noisy, clean, alpha = random_batch(0.1, alpha=alpha)
    got = xdlm_loss(logits, noisy, clean, alpha, 0.1, MASK)  # [B, L]
    for b in range(4):
        for i in range(32):
            one = (slice(b, b + 1), slice(i, i + 1))
            want = xdlm_loss(logits[one], noisy[one], clean[one], alpha[b, i : i + 1], 0.1, MASK)  # [1, 1]
            torch.testing.assert_close(got[b, i], want[0, 0], rtol=1e-12, atol=0)


def test_logits_not_modified_and_dtypes():
    for dtype, out in [(torch.float64, torch.float64), (torch.float32, torch.float32), (torch.bfloat16, torch.float32)]:
        logits, noisy, clean, alpha = random_batch(0.1, dtype=dtype)
        before = logits.clone()
        loss = xdlm_loss(logits, noisy, clean, alpha, 0.1, MASK)
        assert torch.equal(logits, before) and loss.dtype == out


def test_float32_within_1e5_of_float64_for_alpha_1e4_to_1_minus_1e4():
    """Same float32-representable logits, same alpha: float32 vs float64 computation; finite gradients."""
    alphas = torch.tensor([1e-4, 3e-4, 1e-3, 1e-2, 0.1, 0.5, 0.9, 0.99, 0.999, 1 - 1e-4], dtype=torch.float64)
    for vocab in (33, 4096):
        for k1 in [0.0, 1e-3, 0.1, 0.5, 1.0]:
            for seed in range(2):
                logits, noisy, clean, alpha = random_batch(k1, B=len(alphas), L=24, vocab=vocab, mask_id=vocab - 1,
                                                           seed=seed, dtype=torch.float32, alpha=alphas)
                want = xdlm_loss(logits.double(), noisy, clean, alpha, k1, vocab - 1)
                logits.requires_grad_()
                got = xdlm_loss(logits, noisy, clean, alpha, k1, vocab - 1)
                got.sum().backward()
                err = ((got.double() - want).abs() / want.abs().clamp_min(1e-30))[want > 1e-12]
                assert err.max() <= 1e-5, (vocab, k1, err.max().item())
                assert torch.isfinite(logits.grad).all()


def test_bf16_logits_are_scored_in_float32():
    """bf16 logits: the loss is computed in float32 from the exact (upcast) bf16 values, so it is within the
    float32 accuracy (1e-5 relative, as above) of a float64 computation on the same values; computed in bf16 it
    is off by up to 5e-3."""
    logits, noisy, clean, alpha = random_batch(0.1, dtype=torch.bfloat16, vocab=512, mask_id=511)
    got = xdlm_loss(logits, noisy, clean, alpha, 0.1, 511)
    want = xdlm_loss(logits.double(), noisy, clean, alpha, 0.1, 511)
    assert got.dtype == torch.float32
    err = ((got.double() - want).abs() / want.abs().clamp_min(1e-30))[want > 1e-12]
    assert err.max() <= 1e-5, err.max().item()


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(k1=1.5), "k1"),
        (dict(k1=-0.1), "k1"),
        (dict(alpha=torch.tensor([0.0, 0.5])), "alpha_t"),
        (dict(alpha=torch.tensor([0.5, 1.5])), "alpha_t"),
        (dict(alpha=torch.tensor([0.5, 0.5, 0.5])), "alpha_t"),
        (dict(noisy=torch.zeros(2, 4, dtype=torch.long)), "shape"),
        (dict(clean=torch.zeros(2, 4, dtype=torch.long)), "shape"),
        (dict(mask_id=V), "mask_id"),
        (dict(clean=torch.full((2, 5), MASK)), "mask id"),
        (dict(mask_id=None), "mask_id=None"),
    ],
)
def test_bad_input_raises_value_error(change, match):
    args = dict(logits=torch.randn(2, 5, V), noisy=torch.zeros(2, 5, dtype=torch.long),
                clean=torch.zeros(2, 5, dtype=torch.long), alpha=torch.tensor([0.3, 0.7]), k1=0.1, mask_id=MASK)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        xdlm_loss(args["logits"], args["noisy"], args["clean"], args["alpha"], args["k1"], args["mask_id"])


# ---------------------------------------------------------------------------------------------- reverse step


@pytest.mark.parametrize("k1", K1S)
def test_reverse_step_equals_bayes_posterior(k1):
    g = torch.Generator().manual_seed(2)
    for alpha_t, alpha_s in [(1e-3, 0.1), (0.3, 0.6), (0.5, 0.5), (0.9, 1.0)]:
        for z in [3, MASK, 7]:
            logits = torch.randn(V, generator=g, dtype=torch.float64)
            p = model_probs(logits, MASK)
            r = stationary(k1, MASK, V)
            want = bayes_posterior(p @ transition(alpha_s, r), alpha_t, alpha_s, z, r)
            got = reverse_step_probs(logits.view(1, 1, V), torch.tensor([[z]]), torch.tensor([alpha_t], dtype=torch.float64),
                                     torch.tensor([alpha_s], dtype=torch.float64), k1, MASK)[0, 0]
            assert torch.allclose(got, want, rtol=1e-10, atol=1e-14), (k1, alpha_t, alpha_s, z)


def test_reverse_step_keeps_a_token_the_model_rules_out():
    logits = torch.zeros(1, 1, V)
    logits[..., 3] = -math.inf  # p_3 = 0 with k1 = 0: z = 3 is impossible under p; the step keeps it
    probs = reverse_step_probs(logits, torch.tensor([[3]]), torch.tensor([0.5]), torch.tensor([0.7]), 0.0, MASK)
    assert probs[0, 0, 3] == 1 and probs.sum() == 1


# ---------------------------------------------------------------------------------------------- forward process, prior


@pytest.mark.parametrize("k1, mask_id", [(0.0, MASK), (0.3, MASK), (1.0, MASK), (1.0, None)])
def test_forward_process_marginals_match_q(k1, mask_id):
    """Empirical frequencies of z_t for x = 3 within 5 binomial standard deviations of q(z_t | x)."""
    n, alpha = 200_000, 0.4
    clean = torch.full((4, n // 4), 3)
    noisy = forward_process(clean, torch.full((4,), alpha), k1, mask_id, V, generator=torch.Generator().manual_seed(0))
    want = alpha * torch.nn.functional.one_hot(torch.tensor(3), V).double() + (1 - alpha) * stationary(k1, mask_id, V)
    freq = torch.bincount(noisy.flatten(), minlength=V).double() / n
    assert ((freq - want).abs() <= 5 * (want * (1 - want) / n).sqrt() + 1e-12).all()


def test_forward_process_keep_mask_leaves_tokens_clean():
    clean = torch.randint(0, MASK, (2, 50), generator=torch.Generator().manual_seed(0))
    keep = torch.zeros_like(clean, dtype=torch.bool)
    keep[:, :20] = True
    noisy = forward_process(clean, torch.tensor([1e-3, 1e-3]), 0.5, MASK, V, generator=torch.Generator().manual_seed(1), keep_mask=keep)
    assert torch.equal(noisy[:, :20], clean[:, :20]) and (noisy[:, 20:] != clean[:, 20:]).any()


def test_prior_sample_frequencies():
    z = prior_sample((100_000,), 0.2, MASK, V, generator=torch.Generator().manual_seed(0))
    want = stationary(0.2, MASK, V)
    freq = torch.bincount(z, minlength=V).double() / z.numel()
    assert ((freq - want).abs() <= 5 * (want * (1 - want) / z.numel()).sqrt()).all()


# ---------------------------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("schedule", [LinearSchedule(), LogLinearSchedule(1e-3), get_schedule("loglinear", eps=0.01)])
def test_schedule_weight_is_minus_dalpha_dt(schedule):
    t = torch.linspace(0.01, 0.99, 11, dtype=torch.float64)
    h = 1e-6
    numeric = -(schedule.alpha(t + h) - schedule.alpha(t - h)) / (2 * h)
    assert torch.allclose(schedule.weight(t), numeric, rtol=1e-8)
    assert (schedule.alpha(t) > 0).all() and (schedule.alpha(t) <= 1).all()


def test_get_schedule_unknown_name_raises():
    assert isinstance(get_schedule("linear"), LinearSchedule)
    with pytest.raises(ValueError, match="linear"):
        get_schedule("cosine")


def test_sample_t_range_and_antithetic_strata():
    t = sample_t(10_000, eps=1e-3, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.float32 and t.min() >= 1e-3 and t.max() < 1
    n = 8
    t = sample_t(n, eps=0.0, antithetic=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal((t * n).floor().long(), torch.arange(n))
