"""generate(): the remasking sampler with XDLM refinement and the ancestral sampler (docs/sampling.md)."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.stats import chisquare
from torch.overrides import TorchFunctionMode

from llada_xdlm import LLaDAModelLM, SamplerConfig, generate
from llada_xdlm.diffusion import reverse_step_probs
from llada_xdlm.sampling import _propose, ancestral_step, truncate_at_stop


def _prompts(tokenizer, texts):
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


class Boost(nn.Module):
    """Wraps a model and adds `amount` to one id's logit (to make a token tempting: mask, EOS)."""

    def __init__(self, model, token_id, amount):
        super().__init__()
        self.model, self.token_id, self.amount, self.config = model, token_id, amount, model.config

    def forward(self, input_ids, attention_mask=None):
        out = self.model(input_ids, attention_mask=attention_mask)
        out.logits[..., self.token_id] += self.amount
        return out


def reference_llada(model, prompt, steps, gen_length, block_length, mask_id, cfg_scale=0.0):
    """An independent step-by-step LLaDA low-confidence sampler (temperature 0, one row at a time, float64
    softmax), with the mask logit excluded (the model never predicts the mask)."""
    B, P = prompt.shape
    x = torch.cat([prompt, torch.full((B, gen_length), mask_id)], dim=1)
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    for nb in range(num_blocks):
        lo, hi = P + nb * block_length, P + (nb + 1) * block_length
        counts = []
        for j in range(B):
            n = int((x[j, lo:hi] == mask_id).sum())
            counts.append([n // steps_per_block + (i < n % steps_per_block) for i in range(steps_per_block)])
        for i in range(steps_per_block):
            mask_index = x == mask_id
            logits = model(x).logits.double()
            if cfg_scale > 0:
                un_x = x.clone()
                un_x[:, :P] = mask_id
                un = model(un_x).logits.double()
                logits = un + (cfg_scale + 1) * (logits - un)
            logits[..., mask_id] = -math.inf
            x0 = logits.argmax(-1)
            p = logits.softmax(-1).gather(-1, x0[..., None]).squeeze(-1)
            p[:, hi:] = -math.inf
            conf = torch.where(mask_index, p, torch.full_like(p, -math.inf))
            for j in range(B):
                idx = conf[j].topk(counts[j][i]).indices
                x[j, idx] = x0[j, idx]
    return x


@pytest.fixture
def prompts(tiny_tokenizer):
    return _prompts(tiny_tokenizer, ["The quick brown fox", "A module that provides a simple interface to files"])


def test_exactly_steps_forwards_and_two_per_step_with_cfg(tiny_model, prompts):
    ids, am = prompts
    calls = []
    tiny_model.register_forward_hook(lambda *a: calls.append(1))
    generate(tiny_model, ids, am, steps=8, gen_length=16)
    assert len(calls) == 8
    calls.clear()
    generate(tiny_model, ids, am, steps=8, gen_length=16, block_length=4, k1=0.3, cfg_scale=1.5)
    assert len(calls) == 16
    calls.clear()
    generate(tiny_model, ids, am, steps=6, gen_length=12, sampler="ancestral", k1=0.2)
    assert len(calls) == 6


def test_lm_head_runs_on_the_window_only_never_on_the_prompt(tiny_model, prompts):
    ids, am = prompts
    head_rows = []
    tiny_model.get_output_embeddings().register_forward_hook(lambda mod, args, out: head_rows.append(args[0].shape[1]))
    generate(tiny_model, ids, am, steps=4, gen_length=16, block_length=8)  # k1 = 0: the current block only
    assert head_rows == [8] * 4
    head_rows.clear()
    generate(tiny_model, ids, am, steps=4, gen_length=16, block_length=8, k1=0.2)  # refinement: all generated so far
    assert head_rows == [8, 8, 16, 16]


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(k1=0.3, temperature=1.0),
    dict(k1=1.0, remasking="random", temperature=0.5, block_length=8),
    dict(cfg_scale=1.0, k1=0.1),
    dict(sampler="ancestral", k1=0.3),
    dict(sampler="ancestral", k1=0.0, top_p=0.9),
])
def test_prompt_and_padding_unchanged_and_no_mask_left(tiny_model, tiny_config, prompts, kwargs):
    ids, am = prompts
    out = generate(tiny_model, ids, am, steps=8, gen_length=16, generator=torch.Generator().manual_seed(0), **kwargs)
    assert out.shape == (2, ids.shape[1] + 16) and out.dtype == torch.long
    assert torch.equal(out[:, : ids.shape[1]], ids)
    assert not (out == tiny_config.mask_token_id).any()


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_argmax_never_picks_mask(tiny_model, tiny_config, prompts, temperature):
    mask_id = tiny_config.mask_token_id
    tempting = Boost(tiny_model, mask_id, 50.0)  # the mask would win every argmax if it were allowed
    out = generate(tempting, *prompts, steps=4, gen_length=16, k1=0.5, temperature=temperature,
                   generator=torch.Generator().manual_seed(1), return_trajectory=True)
    assert not (out.sequences == mask_id).any()
    assert not out.trajectory.remasked.any()


@pytest.mark.parametrize("block_length, cfg_scale, steps", [(24, 0.0, 6), (8, 0.0, 6), (12, 2.0, 6), (24, 0.0, 12)])
@pytest.mark.parametrize("peaked", [False, True])
def test_k1_zero_matches_reference_llada_sampler(tiny_model, tiny_tokenizer, tiny_config, block_length, cfg_scale,
                                                 steps, peaked):
    """Token identity with LLaDA's sampler (float64 softmax). peaked: a float64 model whose LM head is scaled x400,
    so that most confidences lie within float32's rounding of 1 (logit gaps above ~17) but not float64's; they
    must still be ranked in their true order, not tied and committed left to right."""
    model = tiny_model
    if peaked:
        model = copy.deepcopy(tiny_model).double()
        model.get_output_embeddings().weight.data.mul_(400)
    texts = ["The quick brown fox jumps over", "Return a new list of the items"]
    ids = torch.tensor([tiny_tokenizer(t)["input_ids"][:5] for t in texts])  # [2, 5]: no padding
    ref = reference_llada(model, ids, steps=steps, gen_length=24, block_length=block_length,
                          mask_id=tiny_config.mask_token_id, cfg_scale=cfg_scale)
    ours = generate(model, ids, steps=steps, gen_length=24, block_length=block_length, k1=0.0, cfg_scale=cfg_scale)
    assert torch.equal(ours, ref)


def _logits_on(model, ids, am, canvas_gen):
    x = torch.cat([ids, canvas_gen], dim=1)
    return model(x, attention_mask=torch.cat([am, torch.ones_like(canvas_gen)], 1)).logits[:, ids.shape[1]:]


@pytest.mark.parametrize("k1", [0.1, 0.3])
def test_refinement_within_budget_and_only_rewrites_committed_generated_tokens(tiny_model, tiny_config, prompts, k1):
    ids, am = prompts
    mask_id = tiny_config.mask_token_id
    out = generate(tiny_model, ids, am, steps=16, gen_length=32, block_length=16, k1=k1, return_trajectory=True)
    traj = out.trajectory
    assert torch.equal(out.sequences[:, : ids.shape[1]], ids)
    filled = traj.filled.sum(-1).cumsum(0)  # [S, B] cumulative fills
    refined = traj.refined.sum(-1).cumsum(0)  # [S, B] cumulative rewrites
    assert refined[-1].sum() > 0, "a random tiny model should disagree with some of its earlier choices"
    budget = torch.floor(k1 / (1 - k1) * filled.double() + 1e-9).long()
    assert (refined <= budget).all()
    assert not (traj.filled & traj.refined).any() and not traj.remasked.any()
    # every rewrite replaced a committed token by the step's argmax, which is at least as probable
    for s in range(traj.filled.shape[0]):
        if not traj.refined[s].any():
            continue
        p = _logits_on(tiny_model, ids, am, traj.tokens[s]).index_fill(-1, torch.tensor([mask_id]), -math.inf)
        p = p.softmax(-1)
        where = traj.refined[s]
        old, new = traj.tokens[s][where], traj.tokens[s + 1][where]
        assert (traj.tokens[s][where] != mask_id).all()
        assert torch.equal(new, p.argmax(-1)[where])
        assert (p[where].gather(-1, new[:, None]) >= p[where].gather(-1, old[:, None]) - 1e-6).all()


def test_refinement_budget_is_carried_over_and_unused_at_k1_zero(tiny_model, prompts):
    ids, am = prompts
    out = generate(tiny_model, ids, am, steps=8, gen_length=16, k1=0.0, return_trajectory=True)
    assert not out.trajectory.refined.any()
    # k1 = 0.5: budget = cumulative fills; with 2 fills a step there is room, and unused room carries over
    out = generate(tiny_model, ids, am, steps=8, gen_length=16, k1=0.5, return_trajectory=True)
    filled = out.trajectory.filled.sum(-1).cumsum(0)
    refined = out.trajectory.refined.sum(-1).cumsum(0)
    assert (refined <= filled).all() and refined[-1].sum() > 0


def test_k1_one_refines_without_budget(tiny_model, tiny_config, prompts):
    ids, am = prompts
    out = generate(tiny_model, ids, am, steps=8, gen_length=16, k1=1.0, return_trajectory=True)
    assert not (out.sequences == tiny_config.mask_token_id).any()
    assert out.trajectory.refined.sum() > 0
    # no budget: after the last step no committed token has a different, at-least-as-probable argmax left untaken
    s = -1
    p = _logits_on(tiny_model, ids, am, out.trajectory.tokens[s - 1])
    p = p.index_fill(-1, torch.tensor([tiny_config.mask_token_id]), -math.inf).softmax(-1)
    old = out.trajectory.tokens[s - 1]
    committed = old != tiny_config.mask_token_id
    better = committed & (p.argmax(-1) != old) & (p.max(-1).values >= p.gather(-1, old[..., None]).squeeze(-1))
    assert torch.equal(better, out.trajectory.refined[s])


class NextIdModel(nn.Module):
    """A scripted denoiser over ids 0..5 (6 is the mask): at a masked position it proposes id 0, at a position
    holding id t it proposes (t + 1) % 6, always with logit 5 + 0.1 * position against 0 elsewhere. So every
    committed token has a more probable rival (a refinement candidate) and later positions are more confident."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(mask_token_id=6, vocab_size=7, k1=0.0)

    def forward(self, input_ids, attention_mask=None):
        target = torch.where(input_ids == 6, 0, (input_ids + 1) % 6)  # [B, L]
        logits = torch.zeros(*input_ids.shape, 7)
        position = torch.arange(input_ids.shape[1], dtype=torch.float32)
        logits.scatter_(-1, target[..., None], (5 + 0.1 * position).expand_as(target)[..., None])
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize("refine_budget, rewrites_per_step", [
    # gen 4, two blocks of 2, one fill a step, k1 = 0.5 (k1 / (1 - k1) = 1). Committed tokens in the window before
    # each step: 0, 1, 2, 3. "global": budget = fills so far - rewrites so far = 1, 2 - 0, 3 - 1, 4 - 3.
    ("global", [0, 1, 2, 1]),
    # "block": 0 at each block's first step, then fills in the block - rewrites in the block = 2 - 0; block 0's
    # unused budget is dropped.
    ("block", [0, 1, 0, 2]),
])
def test_refine_budget_rules_on_a_scripted_model(refine_budget, rewrites_per_step):
    out = generate(NextIdModel(), torch.tensor([[3]]), steps=4, gen_length=4, block_length=2, k1=0.5,
                   refine_budget=refine_budget, return_trajectory=True)
    assert out.trajectory.refined.sum(dim=(1, 2)).tolist() == rewrites_per_step
    assert out.trajectory.filled.sum(dim=(1, 2)).tolist() == [1, 1, 1, 1]
    assert out.sequences[0, 0] == 3  # the prompt is never rewritten


@pytest.mark.parametrize("k1", [0.5, 1.0])
def test_block_budget_rewrites_nothing_at_a_blocks_first_step(tiny_model, prompts, k1):
    out = generate(tiny_model, *prompts, steps=8, gen_length=16, block_length=4, k1=k1, refine_budget="block",
                   return_trajectory=True)
    first_steps = [0, 2, 4, 6]  # 2 steps per block
    assert not out.trajectory.refined[first_steps].any()
    assert out.trajectory.refined.any()  # the rule is not vacuous: later steps do rewrite


@pytest.mark.parametrize("k1", [0.1, 0.5, 1.0])
def test_block_budget_equals_global_with_one_block(tiny_model, prompts, k1):
    kwargs = dict(steps=8, gen_length=16, k1=k1, temperature=1.0)
    a = generate(tiny_model, *prompts, refine_budget="global", generator=torch.Generator().manual_seed(0), **kwargs)
    b = generate(tiny_model, *prompts, refine_budget="block", generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(a, b)


def test_sampler_config_and_keywords_give_the_same_output(tiny_model, prompts):
    config = SamplerConfig(steps=4, gen_length=8, k1=0.3)
    a = generate(tiny_model, *prompts, config)
    b = generate(tiny_model, *prompts, steps=4, gen_length=8, k1=0.3)
    c = generate(tiny_model, *prompts, config, k1=0.0)  # keywords override the config
    d = generate(tiny_model, *prompts, steps=4, gen_length=8, k1=0.0)
    assert torch.equal(a, b) and torch.equal(c, d) and not torch.equal(a, c)
    with pytest.raises(TypeError, match="unknown sampler setting"):
        generate(tiny_model, *prompts, step=4)


@pytest.mark.parametrize("kwargs", [dict(k1=0.0), dict(k1=0.3, block_length=8), dict(sampler="remask", cfg_scale=1.0)])
def test_batch_invariance_with_left_padding(tiny_model, tiny_tokenizer, kwargs):
    texts = ["Hello", "The quick brown fox jumps over the lazy dog", "Return a new list"]
    ids, am = _prompts(tiny_tokenizer, texts)
    assert (am == 0).any()
    batch = generate(tiny_model, ids, am, steps=8, gen_length=16, **kwargs)
    for j, text in enumerate(texts):
        one, _ = _prompts(tiny_tokenizer, [text])
        alone = generate(tiny_model, one, steps=8, gen_length=16, **kwargs)
        assert torch.equal(batch[j, -alone.shape[1]:], alone[0]), text


def test_fill_counts_split_evenly_with_remainder_first(tiny_model, prompts):
    out = generate(tiny_model, *prompts, steps=4, gen_length=10, return_trajectory=True)
    assert out.trajectory.filled.sum(-1).T.tolist() == [[3, 3, 2, 2]] * 2


def test_random_remasking_fills_in_random_order(tiny_model, tiny_config, prompts):
    orders = []
    for seed in range(3):
        out = generate(tiny_model, *prompts, steps=8, gen_length=16, remasking="random", k1=0.2,
                       generator=torch.Generator().manual_seed(seed), return_trajectory=True)
        assert not (out.sequences == tiny_config.mask_token_id).any()
        assert out.trajectory.filled.sum(-1).T.tolist() == [[2] * 8] * 2
        orders.append(out.trajectory.filled.int().argmax(0))  # [B, G] the step that filled each position
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    confident = generate(tiny_model, *prompts, steps=8, gen_length=16, return_trajectory=True)
    assert not torch.equal(confident.trajectory.filled.int().argmax(0), orders[0])


def test_semi_autoregressive_blocks_fill_left_to_right(tiny_model, prompts):
    out = generate(tiny_model, *prompts, steps=8, gen_length=32, block_length=8, return_trajectory=True)
    filled = out.trajectory.filled  # [8, B, 32]: 2 steps per block
    for step in range(8):
        block = step // 2
        assert filled[step, :, block * 8:(block + 1) * 8].sum(-1).tolist() == [4, 4]
        assert not filled[step, :, :block * 8].any() and not filled[step, :, (block + 1) * 8:].any()


def test_cfg_unconditional_copy_masks_only_the_real_prompt(tiny_model, tiny_config, prompts):
    ids, am = prompts
    seen = []
    tiny_model.register_forward_pre_hook(lambda mod, args, kw: seen.append((args or (kw["input_ids"],))[0].clone()),
                                         with_kwargs=True)
    out = generate(tiny_model, ids, am, steps=2, gen_length=8, cfg_scale=3.0)
    cond, uncond = seen[0], seen[1]
    P = ids.shape[1]
    real = am.bool()
    assert torch.equal(cond[:, :P], ids)
    assert (uncond[:, :P][real] == tiny_config.mask_token_id).all()
    assert torch.equal(uncond[:, :P][~real], ids[~real])  # padding stays padding
    assert torch.equal(uncond[:, P:], cond[:, P:])
    assert not torch.equal(out, generate(tiny_model, ids, am, steps=2, gen_length=8))


@pytest.mark.parametrize("temperature", [0.0, 0.8, 2.0])
def test_eos_suppression_works_at_any_temperature(tiny_model, tiny_config, prompts, temperature):
    eos = tiny_config.eos_token_id
    eager = Boost(tiny_model, eos, 4.0)  # EOS is the most likely token almost everywhere
    g = torch.Generator().manual_seed(0)
    free = generate(eager, *prompts, steps=8, gen_length=16, temperature=temperature, k1=0.2, generator=g)
    assert (free[:, -16:] == eos).any()
    banned = generate(eager, *prompts, steps=8, gen_length=16, temperature=temperature, k1=0.2, generator=g,
                      suppress_tokens=[eos])
    assert not (banned[:, -16:] == eos).any()
    ancestral = generate(eager, *prompts, steps=4, gen_length=16, sampler="ancestral", k1=0.2, generator=g,
                         suppress_tokens=[eos])
    assert not (ancestral[:, -16:] == eos).any()


def test_eos_token_id_blanks_everything_after_the_first_eos(tiny_model, tiny_config, prompts):
    eos = tiny_config.eos_token_id
    eager = Boost(tiny_model, eos, 4.0)
    kw = dict(steps=8, gen_length=16, temperature=1.0)
    raw = generate(eager, *prompts, generator=torch.Generator().manual_seed(0), **kw)
    cut = generate(eager, *prompts, generator=torch.Generator().manual_seed(0), eos_token_id=eos, **kw)
    gen_raw, gen_cut = raw[:, -16:], cut[:, -16:]
    for r, c in zip(gen_raw, gen_cut):
        first = int((r == eos).nonzero()[0]) if (r == eos).any() else 16
        assert torch.equal(c[:first], r[:first]) and (c[first:] == eos).all()
    assert not torch.equal(gen_raw, gen_cut), "the boosted model should write text after an EOS"


def test_stop_strings_end_each_row_after_the_token_that_completes_one(tiny_model, tiny_tokenizer, prompts):
    """A stop string taken from the middle of row 0's text: each row keeps its tokens up to the first one whose
    prefix decodes to a text containing it (the stop string kept), then EOS; a row without it is unchanged."""
    run = lambda **kw: generate(tiny_model, *prompts, steps=8, gen_length=16, temperature=1.0,  # noqa: E731
                                generator=torch.Generator().manual_seed(0), **kw)[:, -16:]
    raw = run()
    stop = tiny_tokenizer.decode(raw[0, 5:7].tolist())
    assert stop.strip(), "the sample should have text at positions 5-6"
    out = run(stop_strings=[stop, "a string no sample contains"], tokenizer=tiny_tokenizer)
    eos = tiny_tokenizer.eos_token_id
    for row, (r, o) in enumerate(zip(raw, out)):
        hits = [k for k in range(1, 17) if stop in tiny_tokenizer.decode(r[:k].tolist())]
        if not hits:
            assert row == 1 and torch.equal(o, r)
            continue
        k = hits[0]
        assert torch.equal(o[:k], r[:k]) and (o[k:] == eos).all()
        if row == 0:
            assert k <= 7
    assert (out[0, 7:] == eos).all() and not (raw[0, 7:] == eos).all()


def test_stop_strings_need_a_tokenizer_and_strings(tiny_model, prompts):
    with pytest.raises(ValueError, match="pass tokenizer="):
        generate(tiny_model, *prompts, steps=2, gen_length=4, stop_strings=["\n"])
    with pytest.raises(ValueError, match="list of non-empty strings"):
        generate(tiny_model, *prompts, steps=2, gen_length=4, stop_strings="\n", tokenizer=object())


@pytest.mark.parametrize("kwargs", [
    dict(temperature=1.0, k1=0.2),
    dict(remasking="random"),
    dict(sampler="ancestral", k1=0.3, top_p=0.95),
])
def test_same_seed_same_output(tiny_model, prompts, kwargs):
    run = lambda seed: generate(tiny_model, *prompts, steps=4, gen_length=16,  # noqa: E731
                                generator=torch.Generator().manual_seed(seed), **kwargs)
    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_gumbel_sampling_follows_the_softmax(tiny_model, tiny_config):
    """At temperature 1 with one step and one position, the drawn token is a sample of softmax(logits)."""
    N = 4000
    ids = torch.tensor([[tiny_config.bos_token_id, 20, 30, 40]]).expand(N, -1).contiguous()
    out = generate(tiny_model, ids, steps=1, gen_length=1, temperature=1.0, generator=torch.Generator().manual_seed(0))
    logits = tiny_model(torch.cat([ids[:1], torch.tensor([[tiny_config.mask_token_id]])], 1)).logits[0, -1]
    p = logits.index_fill(0, torch.tensor([tiny_config.mask_token_id]), -math.inf).double().softmax(0)
    freq = torch.bincount(out[:, -1], minlength=p.numel()).double() / N
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / N).sqrt() + 3 / N).all()


class FixedLogits(nn.Module):
    """A stand-in model that predicts the same logits [V] at every position (config: mask id and V only)."""

    def __init__(self, logits, mask_id):
        super().__init__()
        self.logits = logits
        self.config = SimpleNamespace(mask_token_id=mask_id, vocab_size=logits.numel(), k1=0.0)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.logits.repeat(*input_ids.shape, 1))  # [B, L, V], writable


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_one_step_samples_follow_the_softmax_of_logits_over_temperature(temperature):
    """One step, one position, N identical rows: the drawn tokens are N samples of softmax(logits / T) over the
    ids other than the mask (whose large logit must be ignored). Pearson's chi-square over the 7 ids (6 degrees of
    freedom) rejects at p < 1e-6, so a correct sampler fails for one seed in a million. Logits 0..3 in steps of
    0.5 make softmax(logits / T) very different at T = 0.5, 1 and 2 (a sampler that divides the Gumbel noise by
    T, i.e. draws from softmax(T * logits), gives p-values below 1e-100 at T != 1)."""
    N, mask_id = 20000, 7
    logits = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 9.0])  # id 7 is the mask
    model = FixedLogits(logits, mask_id)
    prompt = torch.zeros(N, 1, dtype=torch.long)
    out = generate(model, prompt, steps=1, gen_length=1, temperature=temperature,
                   generator=torch.Generator().manual_seed(0))
    p = (logits[:mask_id].double() / temperature).softmax(0)  # [7] the mask id has probability 0
    counts = torch.bincount(out[:, -1], minlength=8).double()
    assert counts[mask_id] == 0
    assert chisquare(counts[:mask_id].numpy(), (N * p).numpy()).pvalue > 1e-6


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-5)])
def test_step_confidences_match_a_float64_softmax(dtype, tol):
    """The in-place statistics of one step: x0 is the argmax, conf = p(x0) and p_cur = p(current token) under the
    float64 softmax of the same (bf16-rounded) logits; banned (-inf) ids get probability 0; large logits do not
    overflow. bf16 logits are upcast, so their confidences are float32-accurate too."""
    logits = (torch.randn(3, 5, 1000, generator=torch.Generator().manual_seed(0)) * 8 + 500).to(dtype)
    logits[..., 7] = -math.inf  # a banned id, the current token at one position
    current = torch.randint(0, 1000, (3, 5), generator=torch.Generator().manual_seed(1))
    current[0, 0] = 7
    logits[2, :, 0] = logits[2].amax(-1).float() + torch.tensor([20.0, 24, 28, 60, 90])  # near-certain ids 0
    p = logits.double().softmax(-1)
    x0, conf, p_cur, log_conf = _propose(logits.clone(), current, 0.0, None)
    assert torch.equal(x0, logits.argmax(-1))
    assert conf.dtype == p_cur.dtype == torch.float32
    torch.testing.assert_close(conf.double(), p.gather(-1, x0[..., None])[..., 0], rtol=tol, atol=0)
    torch.testing.assert_close(p_cur.double(), p.gather(-1, current[..., None])[..., 0], rtol=tol, atol=1e-30)
    assert p_cur[0, 0] == 0
    # log p(x0) against float64's log-softmax (which, unlike p, does not round to 0 at these gaps): float32 p is
    # 1.0 in row 2, log p keeps the true order of the five near-certain positions
    log_p = logits.double().log_softmax(-1).gather(-1, x0[..., None])[..., 0]
    assert log_conf.dtype == torch.float64
    torch.testing.assert_close(log_conf, log_p, rtol=1e-5, atol=1e-6)
    assert (conf[2] == 1).all() and (log_conf[2].diff() > 0).all()


def test_ancestral_one_step_frequencies_match_reverse_step_probs(tiny_model, tiny_config):
    """Empirical transition frequencies of one posterior step against reverse_step_probs. Bound: each of the V
    frequencies of N draws lies within 5 standard errors (+3/N for ids of tiny probability) of its probability."""
    mask_id, V, N = tiny_config.mask_token_id, tiny_config.embedding_size, 8000
    g = torch.Generator().manual_seed(0)
    # (a) through generate(): k1 = 0 starts all-mask, so the first step of 2 is i.i.d. over identical rows
    ids = torch.tensor([[tiny_config.bos_token_id, 11, 12]]).expand(N, -1).contiguous()
    out = generate(tiny_model, ids, steps=2, gen_length=2, sampler="ancestral", k1=0.0, generator=g,
                   return_trajectory=True)
    canvas = torch.cat([ids[:1], torch.full((1, 2), mask_id)], 1)
    a_t, a_s = torch.tensor([1e-9]), torch.tensor([0.5])  # generate()'s first step of 2
    probs = reverse_step_probs(tiny_model(canvas).logits[:, 3:], canvas[:, 3:], a_t, a_s, 0.0, mask_id)[0].double()
    for pos in range(2):
        freq = torch.bincount(out.trajectory.tokens[1][:, pos], minlength=V).double() / N
        p = probs[pos]
        assert ((freq - p).abs() <= 5 * (p * (1 - p) / N).sqrt() + 3 / N).all()
    # (b) the step itself from clean, uniform and masked tokens with k1 > 0
    logits = tiny_model(torch.tensor([[5, 6, 7, mask_id, 9]])).logits  # [1, 5, V]
    z_t = torch.tensor([[5, 6, 100, mask_id, mask_id]])
    a_t, a_s = torch.tensor([0.4]), torch.tensor([0.7])
    z_s = ancestral_step(logits.expand(N, -1, -1), z_t.expand(N, -1), a_t.expand(N), a_s.expand(N), 0.3, mask_id,
                         generator=g)
    probs = reverse_step_probs(logits, z_t, a_t, a_s, 0.3, mask_id)[0].double()
    for pos in range(5):
        freq = torch.bincount(z_s[:, pos], minlength=V).double() / N
        p = probs[pos]
        assert ((freq - p).abs() <= 5 * (p * (1 - p) / N).sqrt() + 3 / N).all()


def test_ancestral_can_remask(tiny_model, tiny_config, prompts):
    out = generate(tiny_model, *prompts, steps=8, gen_length=32, sampler="ancestral", k1=0.5,
                   generator=torch.Generator().manual_seed(0), return_trajectory=True)
    assert out.trajectory.remasked.any()
    assert out.trajectory.filled.any() and out.trajectory.refined.any()
    assert not (out.sequences == tiny_config.mask_token_id).any()


def test_ancestral_top_p_keeps_only_the_nucleus(tiny_model, tiny_config, prompts):
    """top_p below every top probability keeps the argmax alone: the last step (to alpha = 1) writes it."""
    ids, am = prompts
    out = generate(tiny_model, ids, am, steps=4, gen_length=8, sampler="ancestral", k1=0.2, top_p=1e-6,
                   generator=torch.Generator().manual_seed(0), return_trajectory=True)
    logits = _logits_on(tiny_model, ids, am, out.trajectory.tokens[-2])
    logits = logits.index_fill(-1, torch.tensor([tiny_config.mask_token_id]), -math.inf)
    assert torch.equal(out.sequences[:, ids.shape[1]:], logits.argmax(-1))


def test_no_python_loop_over_the_batch(tiny_model, tiny_tokenizer):
    """The number of torch calls does not grow with the batch size (no per-row Python work per step)."""

    class Count(TorchFunctionMode):
        n = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    ids, am = _prompts(tiny_tokenizer, ["The quick brown fox", "Hello"] * 2)
    counts = []
    for rows in (slice(1, 2), slice(0, 4)):  # 1 padded row, then 4 rows
        Count.n = 0
        with Count():
            generate(tiny_model, ids[rows], am[rows], steps=4, gen_length=8, k1=0.3, temperature=1.0)
        counts.append(Count.n)
    assert counts[0] == counts[1]


def test_truncate_at_stop():
    texts = ["a\n\nQuestion: b", "no stop", "x</s>y\n\n"]
    assert truncate_at_stop(texts, ["\n\n", "</s>", ""]) == ["a", "no stop", "x"]


def test_overfit_tiny_model_reproduces_its_sentence(tiny_model, tiny_tokenizer, tiny_config):
    """A tiny model trained to denoise one sentence (and to keep its clean tokens, so refinement has nothing to
    fix) regenerates it from its first token, at k1 = 0 and k1 > 0, in one token per step or four per step."""
    torch.manual_seed(0)
    target = tiny_tokenizer("return the list of files", return_tensors="pt")["input_ids"]  # [1, 13]
    model = tiny_model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = target.expand(16, -1)
    for _ in range(100):
        masked = torch.rand(batch.shape) < torch.rand(16, 1)
        masked[:, 0] = False
        logits = model(batch.masked_fill(masked, tiny_config.mask_token_id)).logits
        loss = F.cross_entropy(logits.flatten(0, 1), batch.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    G = target.shape[1] - 1
    for k1 in (0.0, 0.1):
        for steps in (G, 3):
            out = generate(model, target[:, :1], steps=steps, gen_length=G, k1=k1)
            assert torch.equal(out, target), (k1, steps, tiny_tokenizer.decode(out[0]))


def test_plot_trajectory_writes_html_and_png(tiny_model, tiny_tokenizer, prompts, tmp_path):
    from llada_xdlm.plotting import plot_trajectory

    out = generate(tiny_model, *prompts, steps=4, gen_length=12, k1=0.5, return_trajectory=True)
    html, png = plot_trajectory(out.trajectory, tiny_tokenizer, tmp_path / "traj", row=1)
    assert html.stat().st_size > 500 and png.stat().st_size > 1000
    text = html.read_text()
    assert "filled" in text and "refined" in text and "re-masked" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps=0"),
    (dict(gen_length=16, block_length=5), "block_length=5"),
    (dict(gen_length=16, block_length=4, steps=6), "steps=6"),
    (dict(temperature=-0.1), "temperature=-0.1"),
    (dict(k1=1.5), "k1=1.5"),
    (dict(k1=-0.1), "k1=-0.1"),
    (dict(remasking="entropy"), "remasking='entropy'"),
    (dict(sampler="ddpm"), "sampler='ddpm'"),
    (dict(sampler="ancestral", temperature=0.5), "temperature"),
    (dict(sampler="ancestral", top_p=0.0), "top_p=0.0"),
    (dict(top_p=0.9), "top_p"),
    (dict(cfg_scale=-1.0), "cfg_scale"),
    (dict(suppress_tokens=[10**6]), "suppress_tokens"),
    (dict(refine_budget="step"), "refine_budget='step'"),
    (dict(k1=True), "k1=True must be a number"),
    (dict(steps=4.0), "steps=4.0"),
    (dict(sampler="ancestral", refine_budget="block"), "refine_budget"),
])
def test_bad_arguments_raise_value_error(tiny_model, prompts, kwargs, match):
    args = dict(steps=4, gen_length=8) | kwargs
    with pytest.raises(ValueError, match=match.replace("(", r"\(")):
        generate(tiny_model, *prompts, **args)


def test_bad_prompts_raise_value_error(tiny_model, tiny_config, prompts):
    ids, am = prompts
    mask_id = tiny_config.mask_token_id
    with_mask = ids.clone()
    with_mask[0, -1] = mask_id
    with pytest.raises(ValueError, match="contains the mask id"):
        generate(tiny_model, with_mask, am, steps=2, gen_length=4)
    pad_is_mask = ids.masked_fill(am == 0, mask_id)
    with pytest.raises(ValueError, match="padded with the mask id"):
        generate(tiny_model, pad_is_mask, am, steps=2, gen_length=4)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        generate(tiny_model, ids, am[:, 1:], steps=2, gen_length=4)
    with pytest.raises(ValueError, match="not left-padded"):
        generate(tiny_model, ids, am.flip(1), steps=2, gen_length=4)
    with pytest.raises(TypeError, match="LongTensor"):
        generate(tiny_model, ids.float(), steps=2, gen_length=4)
    with pytest.raises(ValueError, match="no rows"):
        generate(tiny_model, ids[:0], am[:0], steps=2, gen_length=4)


# --- fast decoding: KV cache (prefix / dual) and threshold decoding ------------------------------------------------


class FreshCache(LLaDAModelLM):
    """Serves every cached span forward from a cache rebuilt from the current canvas: the canvas of the cache's last
    full forward with the span's ids written in is run whole first, its keys and values are copied into the
    sampler's cache, then the span runs as usual. Outside the span the canvas cannot change within a block, so a
    sampler using this model is exact and must match the uncached sampler token for token."""

    def __init__(self, config):
        super().__init__(config)
        self.canvases = {}  # id of a cache's first key tensor -> the canvas it describes

    def forward(self, input_ids, attention_mask=None, past_key_values=None, cache_position=None, **kwargs):
        if past_key_values is None:
            out = super().forward(input_ids, attention_mask=attention_mask, **kwargs)
            if out.cache is not None:
                self.canvases[id(out.cache[0][0])] = input_ids.clone()
            return out
        canvas = self.canvases[id(past_key_values[0][0])]
        canvas[:, cache_position] = input_ids
        fresh = super().forward(canvas, attention_mask=attention_mask, use_cache=True).cache
        for (k, v), (fresh_k, fresh_v) in zip(past_key_values, fresh):
            k.copy_(fresh_k)
            v.copy_(fresh_v)
        return super().forward(input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                               cache_position=cache_position, **kwargs)


def _float64_copies(tiny_model, tiny_config):
    fresh = FreshCache(tiny_config)
    fresh.load_state_dict(tiny_model.state_dict())
    return tiny_model.double(), fresh.double().eval()  # float64: no near-tie can flip a token between the two


def reference_block_refinement(model, prompt, attention_mask, steps, gen_length, block_length, k1, mask_id):
    """An independent LLaDA + XDLM sampler (temperature 0, "global" budget, float64 softmax, one row at a time,
    full forward every step) that rewrites committed tokens of the current block only: what the cached sampler
    computes when its cache is fresh. With k1 = 0 or a single block it is the uncached sampler."""
    B, P = prompt.shape
    x = torch.cat([prompt, torch.full((B, gen_length), mask_id)], dim=1)
    am = torch.cat([attention_mask, torch.ones(B, gen_length, dtype=attention_mask.dtype)], dim=1)
    steps_per_block = steps // (gen_length // block_length)
    fills, rewrites = [0] * B, [0] * B
    for lo in range(P, P + gen_length, block_length):
        hi = lo + block_length
        for i in range(steps_per_block):
            logits = model(x, attention_mask=am).logits.double()
            logits[..., mask_id] = -math.inf
            p = logits.softmax(-1)
            n = block_length // steps_per_block + (i < block_length % steps_per_block)
            for b in range(B):
                x0, conf = p[b].argmax(-1), p[b].max(-1).values
                masks = [j for j in range(lo, hi) if x[b, j] == mask_id]
                fill = sorted(masks, key=lambda j: -conf[j])[:n]
                fills[b] += n
                budget = math.floor(k1 / (1 - k1) * fills[b] + 1e-9) - rewrites[b]
                better = [j for j in range(lo, hi)
                          if x[b, j] != mask_id and x0[j] != x[b, j] and conf[j] >= p[b, j, x[b, j]]]
                rewrite = sorted(better, key=lambda j: -conf[j])[:max(budget, 0)]
                rewrites[b] += len(rewrite)
                for j in fill + rewrite:
                    x[b, j] = x0[j]
    return x


PADDED = ["Hello", "The quick brown fox jumps over the lazy dog", "Return a new list"]


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("k1", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("block_length", [16, 4])
@pytest.mark.parametrize("texts", [PADDED[1:2], PADDED], ids=["batch1", "left-padded"])
def test_cache_refreshed_every_step_gives_the_uncached_tokens(tiny_model, tiny_config, tiny_tokenizer, cache, k1,
                                                              block_length, texts):
    model, fresh = _float64_copies(tiny_model, tiny_config)
    ids, am = _prompts(tiny_tokenizer, texts)
    kw = dict(steps=8, gen_length=16, block_length=block_length, k1=k1)
    cached = generate(fresh, ids, am, cache=cache, return_trajectory=True, **kw)
    if k1 == 0 or block_length == 16:  # the uncached sampler refines earlier blocks too: same window only here
        assert torch.equal(cached.sequences, generate(model, ids, am, **kw))
    ref = reference_block_refinement(model, ids, am, 8, 16, block_length, k1, tiny_config.mask_token_id)
    assert torch.equal(cached.sequences, ref)
    if k1 == 0.5:
        assert cached.trajectory.refined.any()  # the refinement path is exercised


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("kwargs", [
    dict(cfg_scale=1.5),
    dict(temperature=1.0, k1=0.3, block_length=16),
    dict(k1=0.3, refine_budget="block", block_length=16, suppress_tokens=[5, 6]),
    dict(threshold=0.004),  # a random tiny model is about uniform (p ~ 1/384): some masks pass, some not
])
def test_fresh_cache_matches_no_cache_with_guidance_sampling_and_thresholds(tiny_model, tiny_config, tiny_tokenizer,
                                                                            cache, kwargs):
    model, fresh = _float64_copies(tiny_model, tiny_config)
    ids, am = _prompts(tiny_tokenizer, PADDED)
    kw = dict(steps=8, gen_length=16, block_length=8) | kwargs
    a = generate(model, ids, am, generator=torch.Generator().manual_seed(0), **kw)
    b = generate(fresh, ids, am, cache=cache, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(a, b)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cached_steps_run_the_span_and_the_first_step_of_every_block_the_whole_canvas(tiny_model, tiny_config,
                                                                                     prompts, cache):
    ids, am = prompts
    P, mask_id = ids.shape[1], tiny_config.mask_token_id
    lengths = []
    tiny_model.register_forward_pre_hook(lambda mod, args, kw: lengths.append((args or (kw["input_ids"],))[0].shape[1]),
                                         with_kwargs=True)
    out = generate(tiny_model, ids, am, steps=8, gen_length=16, block_length=4, k1=0.3, cache=cache,
                   return_trajectory=True)
    L = P + 16
    span = [16 - 4 * b for b in range(4)] if cache == "prefix" else [4] * 4  # [block start, L) or the block
    assert lengths == [length for b in range(4) for length in (L, span[b])]
    # the first step of each block runs the whole canvas: its fills are exactly the uncached step's, recomputed
    # here from the canvas before the step (the block has no committed token yet, so nothing is rewritten)
    traj = out.trajectory
    for b, s in enumerate([0, 2, 4, 6]):
        canvas = torch.cat([ids, traj.tokens[s]], dim=1)
        logits = _logits_on(tiny_model, ids, am, traj.tokens[s]).index_fill(-1, torch.tensor([mask_id]), -math.inf)
        conf, x0 = logits.softmax(-1).max(-1)  # [B, G]
        block = slice(4 * b, 4 * b + 4)
        expected = traj.tokens[s].clone()
        top = conf[:, block].topk(2, dim=-1).indices + 4 * b  # 4 masks over 2 steps: 2 fills
        expected.scatter_(1, top, x0.gather(1, top))
        assert torch.equal(traj.tokens[s + 1], expected), b
        assert torch.equal(canvas[:, :P], ids)


@pytest.mark.parametrize("refine_budget", ["global", "block"])
def test_cached_refinement_rewrites_the_current_block_only_within_the_budget(tiny_model, prompts, refine_budget):
    k1 = 0.5
    out = generate(tiny_model, *prompts, steps=16, gen_length=16, block_length=4, k1=k1, cache="dual",
                   refine_budget=refine_budget, return_trajectory=True)
    traj = out.trajectory
    assert traj.refined.any()
    for s in range(16):
        block = s // 4
        outside = torch.ones(16, dtype=torch.bool)
        outside[4 * block:4 * block + 4] = False
        assert not traj.refined[s][:, outside].any() and not traj.filled[s][:, outside].any()
    filled, refined = traj.filled.sum(-1), traj.refined.sum(-1)  # [S, B]
    if refine_budget == "block":
        filled, refined = filled.view(4, 4, -1).cumsum(1), refined.view(4, 4, -1).cumsum(1)  # [block, step, B]
        assert not traj.refined[[0, 4, 8, 12]].any()
    else:
        filled, refined = filled.cumsum(0), refined.cumsum(0)
    assert (refined <= torch.floor(k1 / (1 - k1) * filled.double() + 1e-9)).all()


def _sharp(tiny_model):
    """The tiny model with its LM head scaled up: confidences spread over (0, 1) instead of ~1/V."""
    with torch.no_grad():
        tiny_model.get_output_embeddings().weight.mul_(60)
    return tiny_model


@pytest.mark.parametrize("cache", ["none", "dual"])
@pytest.mark.parametrize("threshold", [0.55, 0.7])
def test_threshold_commits_every_confident_mask_at_least_the_schedule_and_at_most_steps_forwards(
        tiny_model, tiny_config, prompts, cache, threshold):
    model, mask_id = _sharp(tiny_model), tiny_config.mask_token_id
    window_logits = []
    model.register_forward_hook(lambda mod, args, out: window_logits.append(out.logits.clone()))  # consumed later
    steps, blocks, block_length = 16, 4, 8
    out = generate(model, *prompts, steps=steps, gen_length=32, block_length=block_length, cache=cache,
                   threshold=threshold, return_trajectory=True)
    traj = out.trajectory
    S = traj.filled.shape[0]
    assert len(window_logits) == S  # one forward per step
    assert not (out.sequences == mask_id).any()
    forced_below = multi = 0
    block_of_step = traj.filled.any(1).int().argmax(-1) // block_length  # [S]
    for b in range(blocks):
        block_steps = (block_of_step == b).nonzero().flatten().tolist()
        assert 1 <= len(block_steps) <= steps // blocks
        for i, s in enumerate(block_steps):
            logits = window_logits[s].index_fill(-1, torch.tensor([mask_id]), -math.inf).double()
            conf = logits.softmax(-1).max(-1).values  # [B, 8]: the step's window is the block
            lo = b * block_length
            was_mask = traj.tokens[s][:, lo:lo + block_length] == mask_id
            filled = traj.filled[s][:, lo:lo + block_length]
            for r in range(2):
                if not was_mask[r].any():
                    assert not filled[r].any()  # a finished row is left alone
                    continue
                quota = math.ceil(was_mask[r].sum().item() / (steps // blocks - i))
                above = was_mask[r] & (conf[r] > threshold)
                assert filled[r].sum() >= 1 and (filled[r] >= above).all()  # every confident mask is committed
                below = filled[r] & ~above
                assert below.sum() <= quota  # the rest are the forced ones
                if below.any():  # ...the most confident of the masks left, as many as the schedule's share
                    assert filled[r].sum() == quota
                    rest = conf[r][was_mask[r] & ~filled[r]]
                    assert rest.numel() == 0 or conf[r][filled[r]].min() >= rest.max()
                forced_below += int(below.any())
                multi += int(filled[r].sum() > quota)
    assert forced_below > 0 and multi > 0  # both cases occur: the check is not vacuous
    assert S < steps


@pytest.mark.parametrize("kwargs", [dict(), dict(k1=0.3, cache="dual"), dict(k1=0.3, refine_budget="block"),
                                    dict(cache="prefix", cfg_scale=1.0)])
def test_threshold_one_or_more_is_the_fixed_schedule(tiny_model, prompts, kwargs):
    model = _sharp(tiny_model)
    kw = dict(steps=8, gen_length=16, block_length=8) | kwargs
    fixed = generate(model, *prompts, **kw)
    for threshold in (1.0, 1.5):
        assert torch.equal(generate(model, *prompts, threshold=threshold, **kw), fixed)


class CertainNextIdModel(NextIdModel):
    """NextIdModel with logits x 100: every proposal has probability exactly 1.0 in float32."""

    def forward(self, input_ids, attention_mask=None):
        out = super().forward(input_ids, attention_mask)
        out.logits.mul_(100)
        return out


def test_threshold_one_is_the_fixed_schedule_even_at_confidence_one():
    out = generate(CertainNextIdModel(), torch.tensor([[3]]), steps=4, gen_length=8, threshold=1.0,
                   return_trajectory=True)
    assert out.trajectory.filled.sum(dim=(1, 2)).tolist() == [2, 2, 2, 2]  # "exceeds": 1.0 is not above 1.0


@pytest.mark.parametrize("kwargs", [dict(cache="prefix", k1=0.3, block_length=4), dict(cache="dual", cfg_scale=1.0),
                                    dict(cache="dual", threshold=0.6, k1=0.3, block_length=8)])
def test_cache_never_leaks_across_rows_of_a_padded_batch(tiny_model, tiny_tokenizer, kwargs):
    model = _sharp(tiny_model) if "threshold" in kwargs else tiny_model
    ids, am = _prompts(tiny_tokenizer, PADDED)
    kw = dict(steps=8, gen_length=16) | kwargs
    batch = generate(model, ids, am, **kw)
    for j, text in enumerate(PADDED):
        one, _ = _prompts(tiny_tokenizer, [text])
        assert torch.equal(batch[j, -(one.shape[1] + 16):], generate(model, one, **kw)[0]), text
    other = ids.clone()
    other[1:, -3:] = ids[1:, -3:].flip(0)  # change the other rows' prompts: row 0 must not notice
    assert torch.equal(generate(model, other, am, **kw)[0], batch[0])


def test_cache_is_not_kept_between_generate_calls(tiny_model, tiny_tokenizer):
    a, _ = _prompts(tiny_tokenizer, ["The quick brown fox"])
    b, _ = _prompts(tiny_tokenizer, ["Return a new list of the items"])
    kw = dict(steps=8, gen_length=16, block_length=4, cache="dual", k1=0.3)
    attributes = set(vars(tiny_model))
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    first = generate(tiny_model, a, **kw)
    generate(tiny_model, b, **kw)
    assert torch.equal(generate(tiny_model, a, **kw), first)
    assert set(vars(tiny_model)) == attributes
    assert all(torch.equal(v, state[k]) for k, v in tiny_model.state_dict().items())


def test_ancestral_sampler_with_a_cache_runs_the_generated_part_against_the_prompt_cache(tiny_model, tiny_config,
                                                                                          prompts):
    ids, am = prompts
    lengths = []
    tiny_model.register_forward_pre_hook(lambda mod, args, kw: lengths.append((args or (kw["input_ids"],))[0].shape[1]),
                                         with_kwargs=True)
    out = generate(tiny_model, ids, am, steps=4, gen_length=12, sampler="ancestral", k1=0.3, cache="prefix",
                   generator=torch.Generator().manual_seed(0))
    assert lengths == [ids.shape[1] + 12, 12, 12, 12]
    assert torch.equal(out[:, :ids.shape[1]], ids) and not (out == tiny_config.mask_token_id).any()


def test_cache_and_threshold_with_eos_stop_strings_and_suppressed_tokens(tiny_model, tiny_tokenizer, prompts):
    model, eos, P = _sharp(tiny_model), tiny_tokenizer.eos_token_id, prompts[0].shape[1]
    kw = dict(steps=8, gen_length=16, block_length=8, cache="dual", threshold=0.6, k1=0.3)
    raw = generate(model, *prompts, **kw)[:, P:]
    banned = raw[0, 3].item()
    assert not (generate(model, *prompts, suppress_tokens=[banned], **kw) == banned).any()
    stop = tiny_tokenizer.decode(raw[0, 5:7])  # a string row 0 produces
    out = generate(model, *prompts, stop_strings=[stop], tokenizer=tiny_tokenizer, eos_token_id=eos, **kw)[:, P:]
    for row, gen in zip(raw.tolist(), out.tolist()):
        after_eos = row.index(eos) + 1 if eos in row else len(row)
        ends = [k for k in range(1, len(row) + 1) if stop in tiny_tokenizer.decode(row[:k])] + [after_eos]
        end = min(min(ends), after_eos)  # the first stop string, or the first EOS
        assert gen == row[:end] + [eos] * (len(row) - end)


@pytest.mark.parametrize("kwargs, match", [
    (dict(cache="full"), "cache='full'"),
    (dict(threshold=0.0), "threshold=0.0 must be > 0"),
    (dict(threshold="high"), "threshold='high' must be a number"),
    (dict(threshold=0.9, remasking="random"), "remasking='low_confidence'"),
    (dict(threshold=0.9, sampler="ancestral"), "threshold applies to sampler='remask' only"),
])
def test_bad_cache_and_threshold_settings_raise_value_error(tiny_model, prompts, kwargs, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(")):
        generate(tiny_model, *prompts, steps=4, gen_length=8, **kwargs)


def test_cache_needs_an_llada_model(tiny_model, tiny_config, prompts):
    with pytest.raises(ValueError, match="cache='dual' needs a backbone"):
        generate(Boost(tiny_model, 0, 0.0), *prompts, steps=4, gen_length=8, cache="dual")
