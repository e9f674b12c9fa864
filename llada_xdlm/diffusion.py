"""The XDLM math (docs/math.md): schedules, mixed-noise forward process, closed-form loss, reverse step.

Notation: V ids are scored, m = mask id, k1 = mixing ratio, alpha = alpha_t, beta = 1 - alpha.
Stationary noise r(e) = k1 / V + (1 - k1) [e = m]; forward marginal f_x(e) = alpha [e = x] + beta r(e).
The model's p = softmax(logits) with the mask logit excluded (p_m = 0); f_p(e) = alpha p_e + beta r(e).

Per-token loss (continuous-time NELBO integrand, weight 1 = linear schedule), written as a sum of
non-negative terms so that nothing cancels for small alpha:

    L = r(z) / (alpha f_x(z)) * [ h(f_x(z) / f_p(z) - 1) + KL(f_x || f_p) ],      h(s) = s - log(1 + s)
    KL(f_x || f_p) = f_x(x) h(f_p(x) / f_x(x) - 1) + w * H,    w = beta k1 / V,
    H = sum_{e not in {x, m}} h(u_e),   u_e = c p_e,   c = alpha / w.

From the V axis only four per-token scalars are needed: log p_z, log p_x, P = 1 - p_x (as a sum) and H.
`token_stats` reduces a chunk of logits to them, `token_stats_grad` maps their gradients back to the
logits, and `xdlm_loss_from_stats` is the (float64) scalar algebra; `xdlm_loss` and the fused LM-head loss
(llada_xdlm/ops/fused_loss.py) both run these three functions, so the formula lives here only.
"""

import math

import torch

# Rows per chunk in xdlm_loss are chosen so that one chunk holds about this many logits (cache-sized).
CHUNK_ELEMENTS = 2**20


# ----------------------------------------------------------------------------------------------------------
# Schedules


class LinearSchedule:
    """alpha(t) = 1 - t (LLaDA); weight(t) = -d alpha / dt = 1."""

    def alpha(self, t):
        return 1 - t

    def weight(self, t):
        return torch.ones_like(t)


class LogLinearSchedule:
    """MDLM's log-linear schedule: sigma(t) = -log(1 - (1 - eps) t), so alpha(t) = 1 - (1 - eps) t
    never reaches 0; weight(t) = -d alpha / dt = 1 - eps."""

    def __init__(self, eps=1e-3):
        if not 0 <= eps < 1:
            raise ValueError(f"LogLinearSchedule eps={eps} must be in [0, 1)")
        self.eps = eps

    def alpha(self, t):
        return 1 - (1 - self.eps) * t

    def weight(self, t):
        return torch.full_like(t, 1 - self.eps)


_SCHEDULES = {"linear": LinearSchedule, "loglinear": LogLinearSchedule}


def get_schedule(name, **kwargs):
    """Schedule object by name: 'linear' or 'loglinear'."""
    if name not in _SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(_SCHEDULES)}")
    return _SCHEDULES[name](**kwargs)


def sample_t(batch, eps=1e-3, antithetic=False, generator=None, device=None):
    """t = (1 - eps) u + eps in [eps, 1), u ~ U(0, 1), float32 [batch]. antithetic=True draws one u per
    stratum [i/batch, (i+1)/batch) (low-discrepancy sampling: lower-variance loss estimates)."""
    if batch < 1:
        raise ValueError(f"sample_t batch={batch} must be >= 1")
    if not 0 <= eps < 1:
        raise ValueError(f"sample_t eps={eps} must be in [0, 1)")
    u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
    if antithetic:
        u = (torch.arange(batch, device=u.device, dtype=torch.float64) + u) / batch
    return ((1 - eps) * u + eps).float()  # float64 math, then float32: never rounds to 1.0


# ----------------------------------------------------------------------------------------------------------
# Input checks (at the boundary, before any work)


def _check_k1_mask(k1, mask_id, vocab_size):
    if not isinstance(k1, (int, float)) or not 0 <= k1 <= 1:
        raise ValueError(f"k1={k1!r} must be a number in [0, 1] (0 = MDLM masking, 1 = UDLM uniform noise)")
    if mask_id is None:
        if k1 != 1:
            raise ValueError(f"mask_id=None is only allowed with k1=1 (pure uniform noise); got k1={k1}")
    elif not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id={mask_id} is outside the vocabulary [0, {vocab_size}); pass the mask token id")


def _token_alpha(alpha_t, shape, name="alpha_t"):
    """Broadcast alpha_t of shape [B] (one per sequence) or [B, L] (one per token) to `shape` = [B, L]."""
    if not torch.is_tensor(alpha_t):
        raise TypeError(f"{name} must be a tensor of shape [B] or [B, L], got {type(alpha_t).__name__}")
    if alpha_t.dim() == 1 and alpha_t.shape[0] == shape[0]:
        alpha_t = alpha_t[:, None]
    if alpha_t.dim() != 2 or alpha_t.shape[0] != shape[0] or alpha_t.shape[1] not in (1, shape[1]):
        raise ValueError(f"{name} has shape {tuple(alpha_t.shape)}; expected [B] or [B, L] with [B, L] = {tuple(shape)}")
    if not ((alpha_t > 0) & (alpha_t <= 1)).all():
        raise ValueError(f"{name} must lie in (0, 1]; got min {alpha_t.min().item()}, max {alpha_t.max().item()}")
    return alpha_t.expand(shape)


# ----------------------------------------------------------------------------------------------------------
# Forward process and prior


def forward_process(clean_ids, alpha_t, k1, mask_id, vocab_size, generator=None, keep_mask=None):
    """Sample z_t ~ q(z_t | x) = alpha [z = x] + beta r(z), token by token.

    clean_ids [B, L] long, alpha_t [B] or [B, L]. u ~ U(0, 1): keep x if u < alpha; else a uniform id over
    all vocab_size ids if u < alpha + k1 beta; else mask_id. keep_mask [B, L] bool (True = leave clean, e.g.
    prompt tokens) is optional. Returns noisy_ids [B, L] long.
    """
    _check_k1_mask(k1, mask_id, vocab_size)
    if clean_ids.dim() != 2:
        raise ValueError(f"clean_ids must be [B, L], got shape {tuple(clean_ids.shape)}")
    if keep_mask is not None and keep_mask.shape != clean_ids.shape:
        raise ValueError(f"keep_mask shape {tuple(keep_mask.shape)} must equal clean_ids shape {tuple(clean_ids.shape)}")
    alpha = _token_alpha(alpha_t, clean_ids.shape).double()
    u = torch.rand(clean_ids.shape, generator=generator, device=clean_ids.device, dtype=torch.float64)
    uniform_ids = torch.randint(0, vocab_size, clean_ids.shape, generator=generator, device=clean_ids.device)
    noise = uniform_ids if mask_id is None else torch.where(u < alpha + k1 * (1 - alpha), uniform_ids, mask_id)
    keep = u < alpha
    if keep_mask is not None:
        keep = keep | keep_mask
    return torch.where(keep, clean_ids, noise)


def prior_sample(shape, k1, mask_id, vocab_size, generator=None, device=None):
    """The alpha -> 0 limit of the forward process: each position a uniform id with prob. k1, else the mask."""
    _check_k1_mask(k1, mask_id, vocab_size)
    uniform_ids = torch.randint(0, vocab_size, shape, generator=generator, device=device)
    if mask_id is None:
        return uniform_ids
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return torch.where(u < k1, uniform_ids, mask_id)


# ----------------------------------------------------------------------------------------------------------
# The loss: V-axis statistics, their gradient, and the scalar algebra


def _h(s):
    """h(s) = s - log(1 + s) >= 0 for s > -1, without cancellation near 0 (float64 scalars)."""
    small = s.abs() < 1e-3
    t = torch.where(small, s, 0.0)
    series = t * t * (1 / 2 - t * (1 / 3 - t * (1 / 4 - t / 5)))
    direct = torch.where(small, 1.0, s)
    return torch.where(small, series, direct - torch.log1p(direct))


def uniform_ratio(alpha, k1, vocab_size):
    """c = alpha / w with w = beta k1 / V: u_e = c p_e is the ratio alpha p_e / (beta r(e)) for e not in
    {x, m}. Where w = 0 (k1 = 0 or alpha = 1) c is set to 1; those tokens do not use H."""
    w = (1 - alpha) * (k1 / vocab_size)
    return torch.where(w > 0, alpha / torch.where(w > 0, w, 1.0), 1.0)


def token_probs(logits, noisy_ids, clean_ids, c, k1, mask_id, out=None):
    """u = c p [n, V] (p = softmax of a chunk of logits [n, V], any float dtype; c = 1 when k1 = 0) with u = 0 at
    x and m, in float32 (float64 for float64 logits), and log p_z, log p_x [n] (float64; -inf at z = m).

    u is written into `out` ([n, V] of that dtype; `logits` itself to overwrite them), else a new buffer.
    One softmax pass gives p; the log-normaliser comes from the largest p (exactly 1 / sum_e exp(l_e - max l)),
    so log p_x stays finite when p_x underflows.
    """
    cd = torch.float64 if logits.dtype == torch.float64 else torch.float32
    l_x = logits.gather(1, clean_ids[:, None]).squeeze(1).double()
    u = logits.to(cd, copy=True) if out is None else out if out is logits else out.copy_(logits)  # [n, V]
    if mask_id is not None:
        u[:, mask_id] = -math.inf
    l_z = u.gather(1, noisy_ids[:, None]).squeeze(1).double()
    top = u.amax(-1).double()
    torch.softmax(u, -1, out=u)  # p, in place
    lse = top - u.amax(-1).double().log()
    u.scatter_(1, clean_ids[:, None], 0.0)
    if k1 != 0:
        u.mul_(c.to(cd)[:, None])
    return u, l_z - lse, l_x - lse


def token_stats(logits, noisy_ids, clean_ids, c, k1, mask_id, out=None, scratch=None):
    """Per-row scalars of a chunk of logits [n, V]: ((logp_z, logp_x, P, H), u).

    log p at z and at x (float64), P = sum_{e not in {x, m}} p_e (= 1 - p_x, but accurate when p_x ~ 1) and
    H = sum_{e not in {x, m}} h(u_e) (float32; float64 for float64 logits), each [n], and u from `token_probs`
    (written into `out`), which `token_stats_grad` turns into the gradient. `scratch`: an optional [n, V] work
    buffer. Rows whose H would lose more than ~1e-6 relative accuracy in float32 (every u_e small, so
    u - log1p(u) cancels) are reduced in float64. k1 = 0 needs neither P's sum nor H (H = 0, P = 1 - p_x).
    """
    u, logp_z, logp_x = token_probs(logits, noisy_ids, clean_ids, c, k1, mask_id, out)
    if k1 == 0:
        return (logp_z, logp_x, -torch.expm1(logp_x).to(u.dtype), torch.zeros_like(logp_x, dtype=u.dtype)), u
    U = u.sum(-1)
    y = torch.log1p(u, out=scratch)
    H = torch.sub(u, y, out=y).sum(-1)  # sum of h(u) >= 0: no cancellation between the sums
    # Each h(u) = u - log1p(u) carries an absolute rounding error <= ~1.2e-7 u, so H's relative error is at most
    # ~1.2e-7 U / H. Rows where that bound exceeds 1e-6 (all u small) are redone in float64.
    redo = U > 8 * H
    if u.dtype == torch.float32 and bool(redo.any()):
        ur = u[redo].double()
        H[redo] = (ur.sum(-1) - ur.log1p_().sum(-1)).float()
    return (logp_z, logp_x, U / c.to(u.dtype), H), u


def token_stats_grad(u, noisy_ids, clean_ids, c, k1, logp_x, g_z, g_x, g_P, g_H, scratch=None):
    """d(loss)/d(logits) [n, V] of a chunk, written over u = c p (from `token_stats`), from the gradients
    g_* [n] of the per-row scalars (g_z must be 0 where z = m). `scratch`: an optional [n, V] work buffer.

    With p = softmax, v_e = u_e^2 / (1 + u_e) (0 at x and m), Psi = sum_e v_e:
      d logp_z = [e=z] - p_e,  d logp_x = [e=x] - p_e,  d P = p_x p_e - [e=x] p_x,  d H = v_e - p_e Psi,
    so the row is (u_e / c) coef + g_H v_e off x, with coef = g_P p_x - g_x - g_z - g_H Psi.
    """
    cd = u.dtype
    p_x = logp_x.double().exp()
    g_z, g_x, g_P, g_H = (g.double() for g in (g_z, g_x, g_P, g_H))
    coef = g_P * p_x - g_x - g_z
    if k1 != 0:
        v = torch.add(u, 1, out=scratch)
        v = torch.div(u, v, out=v).mul_(u)  # u^2 / (1 + u), never overflows
        coef = coef - g_H * v.sum(-1).double()  # g_H Psi
    grad = u.mul_((coef / c.double()).to(cd)[:, None])
    if k1 != 0:
        grad.addcmul_(v, g_H.to(cd)[:, None])
    grad.scatter_add_(1, clean_ids[:, None], (p_x * coef + g_x - g_P * p_x).to(cd)[:, None])
    grad.scatter_add_(1, noisy_ids[:, None], g_z.to(cd)[:, None])
    return grad


def xdlm_loss_from_stats(logp_z, logp_x, P, H, alpha, noisy_is_clean, noisy_is_mask, k1, vocab_size):
    """Per-token XDLM loss from the per-token scalars of `token_stats` (all [n]); float64 result.

    Tokens the forward process cannot produce (z not in {x, m} with k1 = 0, or z != x at alpha = 1) get 0.
    """
    logp_z, logp_x, P, H, a = (t.double() for t in (logp_z, logp_x, P, H, alpha))
    b = 1 - a
    w = b * (k1 / vocab_size)  # f_x(e) = f_p(e) - alpha p_e for e not in {x, m}
    has_w = w > 0
    w1 = torch.where(has_w, w, 1.0)
    # KL(f_x || f_p) = f_x(x) h(f_p(x)/f_x(x) - 1) + w H, with f_p(x)/f_x(x) = 1 - delta
    fxx = a + w
    delta = a * P / fxx
    near = delta < 0.5
    log_ratio_far = torch.logaddexp(a.log() + logp_x, w.log()) - fxx.log()  # log(f_p(x) / f_x(x))
    h_x = torch.where(near, _h(-torch.where(near, delta, 0.0)), -delta - log_ratio_far)
    kl = fxx * h_x + torch.where(has_w, w * H, a * P)  # w H -> alpha P as w -> 0
    # h(f_x(z)/f_p(z) - 1): s = alpha P / f_p(x) at z = x, -alpha p_z / f_p(z) at a uniform-noise z, 0 at z = m
    p_z = torch.where(noisy_is_mask, 0.0, logp_z.exp())
    fpz = a * p_z + w
    fpz = torch.where(fpz > 0, fpz, 1.0)  # 0 only where the token is invalid (pre = 0)
    s = torch.where(noisy_is_clean, a * P, -a * p_z) / fpz
    s = torch.where(noisy_is_mask, 0.0, s)
    near_z = s > -0.5
    log1p_s_far = w1.log() - fpz.log()  # log(1 + s) = log(w / f_p(z)) at a uniform-noise z
    h_z = torch.where(near_z, _h(torch.where(near_z, s, 0.0)), s - log1p_s_far)
    # prefactor r(z) / (alpha f_x(z)): (k1/V) / (alpha (alpha + w)) at z = x, 1 / (alpha beta) otherwise
    valid = noisy_is_clean | ((b > 0) & (noisy_is_mask | (k1 > 0)))
    pre = torch.where(noisy_is_clean, (k1 / vocab_size) / (a * fxx), 1 / (a * torch.where(b > 0, b, 1.0)))
    return torch.where(valid, pre * (h_z + kl), 0.0)


def block_buffers(logits, rows):
    """Two reusable [rows, V] work buffers (u and scratch) in the V-axis compute dtype of `logits` (float32,
    or float64 for float64 logits). Untouched memory costs nothing, so they are allocated even where unused."""
    cd = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return [torch.empty(rows, logits.shape[1], dtype=cd, device=logits.device) for _ in range(2)]


class _LogitStats(torch.autograd.Function):
    """logits [N, V] -> (logp_z, logp_x, P, H) for the rows `rows` (None = all), on cache-sized row blocks in
    reused block buffers; backward recomputes the softmax per block, so no [N, V] temporary is kept."""

    @staticmethod
    def forward(ctx, logits, rows, noisy_ids, clean_ids, c, k1, mask_id):
        n = noisy_ids.shape[0]
        step = max(1, CHUNK_ELEMENTS // logits.shape[1])
        buf, scratch = block_buffers(logits, min(step, n))
        out = [[] for _ in range(4)]
        for i in range(0, n, step):
            chunk = logits[i : i + step] if rows is None else logits.index_select(0, rows[i : i + step])
            m = chunk.shape[0]
            stats, _ = token_stats(chunk, noisy_ids[i : i + step], clean_ids[i : i + step], c[i : i + step], k1, mask_id,
                                   buf[:m], scratch[:m])
            for o, t in zip(out, stats):
                o.append(t)
        logp_z, logp_x, P, H = (torch.cat(o) for o in out)
        ctx.save_for_backward(logits, rows, noisy_ids, clean_ids, c, logp_x)
        ctx.k1, ctx.mask_id, ctx.step = k1, mask_id, step
        return logp_z, logp_x, P, H

    @staticmethod
    def backward(ctx, g_z, g_x, g_P, g_H):
        logits, rows, noisy_ids, clean_ids, c, logp_x = ctx.saved_tensors
        grads = [torch.zeros_like(logp_x) if g is None else g for g in (g_z, g_x, g_P, g_H)]
        direct = rows is None and logits.dtype in (torch.float32, torch.float64)  # u and its gradient in grad_logits
        grad_logits = torch.empty_like(logits) if rows is None else torch.zeros_like(logits)
        step, n = ctx.step, noisy_ids.shape[0]
        buf, scratch = block_buffers(logits, min(step, n))
        for i in range(0, n, step):
            sl = slice(i, i + step)
            chunk = logits[sl] if rows is None else logits.index_select(0, rows[sl])
            m = chunk.shape[0]
            u, _, _ = token_probs(chunk, noisy_ids[sl], clean_ids[sl], c[sl], ctx.k1, ctx.mask_id,
                                  grad_logits[sl] if direct else buf[:m])
            g = token_stats_grad(u, noisy_ids[sl], clean_ids[sl], c[sl], ctx.k1, logp_x[sl], *(t[sl] for t in grads),
                                 scratch=scratch[:m])
            if rows is None and not direct:
                grad_logits[sl] = g
            elif rows is not None:
                grad_logits.index_copy_(0, rows[sl], g.to(logits.dtype))
        return grad_logits, None, None, None, None, None, None


def check_loss_inputs(noisy_ids, clean_ids, alpha_t, k1, mask_id, vocab_size, loss_mask):
    """Validate the token-level inputs of xdlm_loss / fused_linear_xdlm_loss ([B, L] or [N]); returns
    alpha broadcast to the ids' shape."""
    _check_k1_mask(k1, mask_id, vocab_size)
    if noisy_ids.shape != clean_ids.shape:
        raise ValueError(f"noisy_ids shape {tuple(noisy_ids.shape)} must equal clean_ids shape {tuple(clean_ids.shape)}")
    if noisy_ids.dtype != torch.long or clean_ids.dtype != torch.long:
        raise TypeError(f"noisy_ids and clean_ids must be torch.long, got {noisy_ids.dtype} and {clean_ids.dtype}")
    if loss_mask is not None and (loss_mask.shape != clean_ids.shape or loss_mask.dtype != torch.bool):
        raise ValueError(f"loss_mask must be a bool tensor of shape {tuple(clean_ids.shape)}, got {loss_mask.dtype} {tuple(loss_mask.shape)}")
    for name, ids in (("noisy_ids", noisy_ids), ("clean_ids", clean_ids)):
        if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"{name} has ids outside [0, {vocab_size}) (V = logits.shape[-1]): min {ids.min().item()}, max {ids.max().item()}")
    if mask_id is not None:
        bad = clean_ids == mask_id if loss_mask is None else (clean_ids == mask_id) & loss_mask
        if bad.any():
            raise ValueError(f"clean_ids contain the mask id {mask_id} at {int(bad.sum())} scored positions: the loss is "
                             "undefined there; exclude them with loss_mask")
    flat = clean_ids.dim() == 1
    alpha = _token_alpha(alpha_t.reshape(-1, 1) if flat and torch.is_tensor(alpha_t) else alpha_t,
                         (clean_ids.shape[0], 1) if flat else clean_ids.shape)
    return alpha.reshape(clean_ids.shape)


def xdlm_loss(logits, noisy_ids, clean_ids, alpha_t, k1, mask_id, loss_mask=None):
    """Per-token XDLM loss [B, L] (weight 1 = linear schedule; multiply by -dalpha/dt for others).

    logits [B, L, V] (float64 / float32 / bf16; never modified; computed in >= float32, float64 in ->
    float64 out, else float32), noisy_ids and clean_ids [B, L] long, alpha_t [B] or [B, L] in (0, 1],
    k1 in [0, 1] (0 = MDLM: masked CE / beta; 1 = UDLM), mask_id (None only with k1 = 1).
    loss_mask [B, L] bool (None = all): False tokens (prompt, padding) get loss 0 and no gradient.
    """
    if not torch.is_tensor(logits) or not logits.is_floating_point() or logits.dim() != 3:
        raise TypeError("logits must be a floating tensor [B, L, V]")
    B, L, V = logits.shape
    if noisy_ids.shape != (B, L):
        raise ValueError(f"noisy_ids shape {tuple(noisy_ids.shape)} must be [B, L] = {(B, L)} (logits are {tuple(logits.shape)})")
    alpha = check_loss_inputs(noisy_ids, clean_ids, alpha_t, k1, mask_id, V, loss_mask)
    out_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    full = loss_mask is None or bool(loss_mask.all())  # all rows: no row gathers, gradient written in place
    rows = None if full else loss_mask.reshape(-1).nonzero().squeeze(1)
    z, x, a = (t.reshape(-1) if rows is None else t.reshape(-1)[rows] for t in (noisy_ids, clean_ids, alpha))
    a = a.double()
    c = uniform_ratio(a, k1, V)
    stats = _LogitStats.apply(logits.reshape(B * L, V), rows, z, x, c, k1, mask_id)
    noisy_is_mask = torch.zeros_like(z, dtype=torch.bool) if mask_id is None else z == mask_id
    loss = xdlm_loss_from_stats(*stats, a, z == x, noisy_is_mask, k1, V).to(out_dtype)
    if rows is None:
        return loss.view(B, L)
    return torch.zeros(B * L, dtype=out_dtype, device=logits.device).index_put((rows,), loss).view(B, L)


# ----------------------------------------------------------------------------------------------------------
# Reverse step


def reverse_step_probs(logits, noisy_ids, alpha_t, alpha_s, k1, mask_id):
    """Plug-in posterior p(z_s = e | z_t = z) [B, L, V] for one step t -> s < t (alpha_s >= alpha_t):
    (a [e = z] + (1 - a) r(z)) f_{p,s}(e) / f_{p,t}(z), a = alpha_t / alpha_s. float32 (float64 in -> out)."""
    if not torch.is_tensor(logits) or not logits.is_floating_point() or logits.dim() != 3:
        raise TypeError("logits must be a floating tensor [B, L, V]")
    B, L, V = logits.shape
    _check_k1_mask(k1, mask_id, V)
    if noisy_ids.shape != (B, L):
        raise ValueError(f"noisy_ids shape {tuple(noisy_ids.shape)} must be [B, L] = {(B, L)}")
    a_t = _token_alpha(alpha_t, (B, L), "alpha_t")
    a_s = _token_alpha(alpha_s, (B, L), "alpha_s")
    if (a_s < a_t).any():
        raise ValueError("alpha_s must be >= alpha_t (s < t: the reverse step removes noise)")
    cd = torch.float64 if logits.dtype == torch.float64 else torch.float32
    a_t, a_s = a_t.to(cd)[..., None], a_s.to(cd)[..., None]  # [B, L, 1]
    t = logits.to(cd, copy=True)
    if mask_id is not None:
        t[..., mask_id] = -math.inf
    p = t.softmax(-1)  # [B, L, V]
    r = torch.full((V,), k1 / V, dtype=cd, device=logits.device)
    if mask_id is not None:
        r[mask_id] += 1 - k1
    f_ps = p.mul_(a_s).add_((1 - a_s) * r)  # f_{p,s}(e)
    a = a_t / a_s
    num = f_ps * ((1 - a) * r[noisy_ids][..., None])
    num.scatter_add_(-1, noisy_ids[..., None], a * f_ps.gather(-1, noisy_ids[..., None]))
    denom = num.sum(-1, keepdim=True)  # = f_{p,t}(z)
    empty = denom == 0  # z impossible under p (e.g. k1 = 0, clean z with p_z = 0): keep z
    num.scatter_add_(-1, noisy_ids[..., None], empty.to(cd))
    return num.div_(torch.where(empty, 1.0, denom))
