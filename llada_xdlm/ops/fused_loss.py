"""Fused LM head + XDLM loss: the per-token loss straight from hidden states, never holding [N, V] logits.

The closed form needs only four per-token scalars from the V axis (llada_xdlm.diffusion.token_stats), so
tokens are processed in chunks: logits of one chunk (chunk_size x V) -> scalars -> loss, and, in the same
pass, the chunk's d(loss_i)/d(logits_i) (diffusion.token_stats_grad) -> d(loss_i)/d(hidden_i) and the
weight gradient summed over tokens. Backward then only scales these by the upstream gradient: when it is
one number on all scored tokens (loss.sum(), loss.mean(), a constant normaliser) that is exact and costs no
matmul; otherwise the weight gradient is recomputed chunk by chunk with the per-token scales.
"""

import torch

from llada_xdlm.diffusion import (
    CHUNK_ELEMENTS,
    block_buffers,
    check_loss_inputs,
    token_stats,
    token_stats_grad,
    uniform_ratio,
    xdlm_loss_from_stats,
)


def _buffers(hidden, weight, rows):
    """Work buffers reused by every chunk (a fresh chunk x V buffer per chunk costs page faults, not only
    memory): logits [rows, V] in the input dtype, a float32 copy for u when that dtype is not float32/float64
    (else None), and one V-axis scratch block."""
    logits = torch.empty(rows, weight.shape[0], dtype=hidden.dtype, device=hidden.device)
    u = None if hidden.dtype in (torch.float32, torch.float64) else torch.empty_like(logits, dtype=torch.float32)
    return logits, u, block_buffers(logits, min(max(1, CHUNK_ELEMENTS // weight.shape[0]), rows))[1]


def _chunk_grads(h, weight, bias, z, x, a, k1, mask_id, buffers, scale=None):
    """Loss [n] (float64) and d(loss_i)/d(logits_i) [n, V] (in the logits' dtype, a view of the `_buffers`
    logits buffer) of one chunk of hidden states [n, D], times the per-token `scale` [n] if given. The V-axis
    work runs on cache-sized row blocks: `token_stats` leaves each block's u = c p in the logits buffer (or its
    float32 copy) and `token_stats_grad` turns it into the gradient in place, so the softmax runs once."""
    n, V = h.shape[0], weight.shape[0]
    logits = buffers[0][:n]
    if bias is None:
        torch.matmul(h, weight.T, out=logits)  # [n, V], input dtype
    else:
        torch.addmm(bias, h, weight.T, out=logits)
    u = logits if buffers[1] is None else buffers[1][:n]
    c = uniform_ratio(a, k1, V)
    step = max(1, CHUNK_ELEMENTS // V)
    blocks = [slice(j, j + step) for j in range(0, n, step)]
    scratch = [buffers[2][: u[b].shape[0]] for b in blocks]
    stats = [token_stats(logits[b], z[b], x[b], c[b], k1, mask_id, u[b], s)[0] for b, s in zip(blocks, scratch)]
    logp_z, logp_x, P, H = (torch.cat(t) for t in zip(*stats))
    noisy_is_mask = torch.zeros_like(z, dtype=torch.bool) if mask_id is None else z == mask_id
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in (logp_z, logp_x, P, H)]
        loss = xdlm_loss_from_stats(*leaves, a, z == x, noisy_is_mask, k1, V)
        g_z, g_x, g_P, g_H = torch.autograd.grad(loss if scale is None else loss * scale, leaves, torch.ones_like(loss))
    for b, s in zip(blocks, scratch):
        token_stats_grad(u[b], z[b], x[b], c[b], k1, logp_x[b], g_z[b], g_x[b], g_P[b], g_H[b], s)
    if u is not logits:
        logits.copy_(u)
    return loss.detach(), logits


def _add_matmul(acc, a, b):
    """acc += a @ b in acc's dtype (float32 accumulation across chunks for bf16 a, b)."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)  # in place: no [V, D] temporary per chunk
    else:
        acc.add_(a @ b)


class _FusedLinearXDLMLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, rows, z, x, a, k1, mask_id, chunk_size):
        N, V = hidden.shape[0], weight.shape[0]
        need_w, need_b = ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2]
        acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32  # accumulation dtype
        loss = torch.zeros(N, dtype=acc, device=hidden.device)
        grad_h = torch.zeros(N, hidden.shape[1], dtype=acc, device=hidden.device)  # unscaled
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        grad_b = torch.zeros(V, dtype=acc, device=weight.device) if need_b else None
        buffers = _buffers(hidden, weight, min(chunk_size, rows.shape[0]))
        for i in range(0, rows.shape[0], chunk_size):
            idx = rows[i : i + chunk_size]
            h = hidden[idx]  # [n, D]
            chunk_loss, dlogits = _chunk_grads(h, weight, bias, z[idx], x[idx], a[idx], k1, mask_id, buffers)
            loss[idx] = chunk_loss.to(acc)
            grad_h[idx] = (dlogits @ weight).to(acc)
            if need_w:
                _add_matmul(grad_w, dlogits.T, h)
            if need_b:
                grad_b.add_(dlogits.sum(0, dtype=acc))
        ctx.grads = grad_h, grad_w, grad_b
        ctx.save_for_backward(hidden, weight, bias, rows, z, x, a)
        ctx.k1, ctx.mask_id, ctx.chunk_size = k1, mask_id, chunk_size
        return loss

    @staticmethod
    def backward(ctx, g):  # g [N]: d(objective)/d(loss_i)
        hidden, weight, bias, rows, z, x, a = ctx.saved_tensors
        grad_h, grad_w, grad_b = ctx.grads or (None, None, None)
        ctx.grads = None  # the buffers are scaled in place: a second backward (retain_graph) recomputes
        need_h = ctx.needs_input_grad[0]
        need_w, need_b = ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2]
        g = g.to(torch.float64 if hidden.dtype == torch.float64 else torch.float32)
        g_rows = g[rows]
        uniform = grad_h is not None and g_rows.numel() > 0 and bool((g_rows == g_rows[0]).all())
        if grad_h is not None:
            grad_h.mul_(g[:, None])  # exact for any per-token scale
        if uniform:  # one scale on all scored tokens (sum, mean, constant normaliser): exact, no matmul
            for t in (grad_w, grad_b):
                if t is not None:
                    t.mul_(g_rows[0])
        elif (need_h and grad_h is None) or need_w or need_b:  # per-token scales: recompute chunk by chunk
            recompute_h = grad_h is None and need_h
            grad_h = torch.zeros_like(hidden, dtype=g.dtype) if recompute_h else grad_h
            if need_w:  # reuse the forward's buffer when there is one
                grad_w = grad_w.zero_() if grad_w is not None else torch.zeros(weight.shape, dtype=g.dtype, device=g.device)
            if need_b:
                grad_b = grad_b.zero_() if grad_b is not None else torch.zeros(weight.shape[0], dtype=g.dtype, device=g.device)
            buffers = _buffers(hidden, weight, min(ctx.chunk_size, rows.shape[0]))
            for i in range(0, rows.shape[0], ctx.chunk_size):
                idx = rows[i : i + ctx.chunk_size]
                h = hidden[idx]
                _, dlogits = _chunk_grads(h, weight, bias, z[idx], x[idx], a[idx], ctx.k1, ctx.mask_id, buffers, g[idx])
                if recompute_h:
                    grad_h[idx] = (dlogits @ weight).to(g.dtype)
                if need_w:
                    _add_matmul(grad_w, dlogits.T, h)
                if need_b:
                    grad_b.add_(dlogits.sum(0, dtype=g.dtype))
        grad_hidden = grad_h.to(hidden.dtype) if need_h else None
        grad_weight = grad_w.to(weight.dtype) if need_w else None
        grad_bias = grad_b.to(bias.dtype) if need_b else None
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None, None, None


def fused_linear_xdlm_loss(hidden, lm_head_weight, noisy_ids, clean_ids, alpha_t, k1, mask_id, chunk_size=256,
                           bias=None, loss_mask=None):
    """Per-token XDLM loss [N] (float32; float64 for float64 inputs) of logits = hidden @ lm_head_weight.T
    (+ bias), equal to xdlm_loss on those logits, computed chunk_size tokens at a time.

    hidden [N, D] (the LM head's input, e.g. LLaDAOutput.last_hidden_state flattened), lm_head_weight [V, D]
    (under ZeRO-3: gathered), noisy_ids / clean_ids [N] long, alpha_t [N] in (0, 1], k1 in [0, 1], mask_id
    (None only with k1 = 1), loss_mask [N] bool (None = all): False tokens get loss 0 and no gradient.
    Memory: one chunk_size x V logits buffer (reused for their gradient; plus a float32 copy for bf16 inputs)
    and cache-sized temporaries, plus float32 gradient accumulators for the weight [V, D] and hidden [N, D]
    between forward and backward.
    Backward is cheapest when the upstream gradient is one number on all scored tokens (see module doc).
    """
    if hidden.dim() != 2 or lm_head_weight.dim() != 2 or hidden.shape[1] != lm_head_weight.shape[1]:
        raise ValueError(f"hidden must be [N, D] and lm_head_weight [V, D]; got {tuple(hidden.shape)} and {tuple(lm_head_weight.shape)}")
    if hidden.dtype != lm_head_weight.dtype or not hidden.is_floating_point():
        raise TypeError(f"hidden ({hidden.dtype}) and lm_head_weight ({lm_head_weight.dtype}) must share one floating dtype")
    if bias is not None and bias.shape != lm_head_weight.shape[:1]:
        raise ValueError(f"bias shape {tuple(bias.shape)} must be [V] = [{lm_head_weight.shape[0]}]")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive int")
    N, V = hidden.shape[0], lm_head_weight.shape[0]
    if noisy_ids.shape != (N,):
        raise ValueError(f"noisy_ids shape {tuple(noisy_ids.shape)} must be [N] = [{N}] (flatten [B, L] inputs)")
    a = check_loss_inputs(noisy_ids, clean_ids, alpha_t, k1, mask_id, V, loss_mask).double()
    rows = torch.arange(N, device=hidden.device) if loss_mask is None else loss_mask.nonzero().squeeze(1)
    return _FusedLinearXDLMLoss.apply(hidden, lm_head_weight, bias, rows, noisy_ids, clean_ids, a, k1, mask_id, chunk_size)
