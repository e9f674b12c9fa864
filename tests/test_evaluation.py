"""Monte-Carlo likelihood estimators and the lm-eval model "xdlm" (in process, tiny model, offline)."""

import copy
import itertools
import json
import math

import numpy
import pytest
import torch
from lm_eval.api.instance import Instance

from llada_xdlm import LLaDAModelLM, generate
from llada_xdlm.diffusion import xdlm_loss
from llada_xdlm.evaluation.likelihood import loglikelihood, nelbo_samples
from llada_xdlm.evaluation.lm_eval_model import XDLMEvalLM


@pytest.fixture
def sequence(tiny_tokenizer):
    """One row: 6 context tokens (kept clean) then 4 target tokens."""
    ids = tiny_tokenizer("The heapq module provides an implementation of the heap queue")["input_ids"][:10]
    target_mask = torch.zeros(1, 10, dtype=torch.bool)
    target_mask[0, 6:] = True
    return torch.tensor([ids]), target_mask


def mdlm_sample_distribution(model, input_ids, target_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Every value the k1 = 0 estimator can draw for one row, and its probability, by enumeration: the masked set S
    (|S| uniform on 1..T, then S uniform among the subsets of that size of the T targets) has probability
    1 / (T C(T, |S|)) and value T / |S| * sum_{i in S} -log p(x_i | x with S masked), the mask id excluded from p.
    Returns (values, probabilities), float64 [2^T - 1] each."""
    mask_id = model.config.mask_token_id
    positions = target_mask[0].nonzero().squeeze(1).tolist()
    T = len(positions)
    subsets = [s for n in range(1, T + 1) for s in itertools.combinations(positions, n)]
    noisy = input_ids.repeat(len(subsets), 1)
    for row, subset in enumerate(subsets):
        noisy[row, list(subset)] = mask_id
    with torch.no_grad():
        logits = model(noisy).logits.double()
    logits[..., mask_id] = -math.inf
    logp = logits.log_softmax(-1).gather(-1, input_ids.expand_as(noisy)[..., None]).squeeze(-1)  # [2^T - 1, L]
    values = torch.tensor([T / len(s) * -logp[row, list(s)].sum().item() for row, s in enumerate(subsets)],
                          dtype=torch.float64)
    probs = torch.tensor([1 / (T * math.comb(T, len(s))) for s in subsets], dtype=torch.float64)
    return values, probs


def exact_mdlm_nelbo(model, input_ids, target_mask) -> float:
    """The k1 = 0 bound: the mean of the estimator's values under their probabilities."""
    values, probs = mdlm_sample_distribution(model, input_ids, target_mask)
    return float((probs * values).sum())


def test_estimators_converge_to_the_exact_bound_and_agree_at_k1_0(tiny_model, sequence):
    ids, target_mask = sequence
    exact = exact_mdlm_nelbo(tiny_model, ids, target_mask)
    g = torch.Generator().manual_seed(0)
    se = {}
    for estimator in ("mdlm", "xdlm"):
        samples = nelbo_samples(tiny_model, ids, target_mask, estimator=estimator, k1=0.0, mc_num=2000,
                                batch_size=1000, generator=g)
        se[estimator] = samples.std().item() / math.sqrt(2000)  # an iid bound: the draws are stratified
        assert abs(samples.mean().item() - exact) < 4 * se[estimator], estimator
        assert se[estimator] < 0.01 * exact  # light-tailed: 2000 samples pin the bound to 1%


def exact_xdlm_nelbo_one_target(model, input_ids, position, k1) -> float:
    """The XDLM bound of a single target by brute force: the integral over t in (0, 1) (128-node Gauss-Legendre)
    of alpha L(t, x) + beta sum_z r(z) L(t, z), every noisy token z enumerated (one forward per z)."""
    mask_id, V = model.config.mask_token_id, model.config.embedding_size
    x = input_ids[0, position].item()
    noisy = input_ids.repeat(V, 1)
    noisy[:, position] = torch.arange(V)
    with torch.no_grad():
        logits = model(noisy).logits[:, position : position + 1].double()  # [V (one per z), 1, V]
    r = torch.full((V,), k1 / V, dtype=torch.float64)
    r[mask_id] += 1 - k1
    nodes, weights = numpy.polynomial.legendre.leggauss(128)
    total = 0.0
    for node, weight in zip(nodes, weights):
        t = (node + 1) / 2
        alpha = torch.full((V,), 1 - t, dtype=torch.float64)
        loss = xdlm_loss(logits, torch.arange(V)[:, None], torch.full((V, 1), x), alpha, k1, mask_id)[:, 0]  # [V]
        total += weight / 2 * ((1 - t) * loss[x] + t * (r * loss).sum()).item()
    return total


def test_xdlm_estimator_matches_brute_force_bound_with_uniform_noise(tiny_model, sequence):
    ids, _ = sequence
    target_mask = torch.zeros_like(ids, dtype=torch.bool)
    target_mask[0, 6] = True  # one target in the middle: context on both sides
    exact = exact_xdlm_nelbo_one_target(tiny_model, ids, 6, k1=0.3)
    samples = nelbo_samples(tiny_model, ids, target_mask, estimator="xdlm", k1=0.3, mc_num=4000, batch_size=2000,
                            generator=torch.Generator().manual_seed(3))
    se = samples.std().item() / math.sqrt(4000)
    assert abs(samples.mean().item() - exact) < 4 * se + 1e-3 * exact, (samples.mean().item(), exact, se)


@pytest.mark.parametrize("estimator,k1", [("mdlm", 0.0), ("xdlm", 0.0), ("xdlm", 0.3)])
def test_estimate_variance_falls_as_one_over_mc_num(tiny_model, sequence, estimator, k1):
    """Var(estimate at mc_num) <= c * sigma^2 / mc_num, sigma^2 the variance of one sample (stratified draws may
    do better than 1/mc_num, never worse); c = 2.5 leaves room for the noise of 100 repeats."""
    ids, target_mask = sequence
    g = torch.Generator().manual_seed(1)
    kwargs = dict(estimator=estimator, k1=k1, batch_size=1024, generator=g)
    sigma2 = nelbo_samples(tiny_model, ids, target_mask, mc_num=2000, **kwargs).var().item()
    for mc_num in (4, 32):
        estimates = loglikelihood(tiny_model, ids.repeat(100, 1), target_mask.repeat(100, 1), mc_num=mc_num, **kwargs)
        assert 0 < estimates.var().item() <= 2.5 * sigma2 / mc_num, (mc_num, estimates.var().item(), sigma2)


def test_xdlm_samples_are_finite_nonnegative_bounds_for_any_k1(tiny_model, sequence):
    ids, target_mask = sequence
    g = torch.Generator().manual_seed(2)
    for k1 in (0.1, 0.5, 1.0):
        nelbo = nelbo_samples(tiny_model, ids, target_mask, estimator="xdlm", k1=k1, mc_num=64, batch_size=64,
                              generator=g)
        assert bool(nelbo.isfinite().all() and (nelbo >= 0).all()), k1


def test_context_and_padding_are_never_noised(tiny_model, tiny_tokenizer):
    ids = torch.tensor([tiny_tokenizer("Regular expression matching operations")["input_ids"][:8]] * 2)
    ids[1, :2] = tiny_tokenizer.pad_token_id
    attention_mask = torch.ones_like(ids)
    attention_mask[1, :2] = 0
    target_mask = torch.zeros_like(ids, dtype=torch.bool)
    target_mask[:, 5:] = True
    seen = []
    hook = tiny_model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(args[0].clone()),
                                                with_kwargs=True)
    for estimator in ("mdlm", "xdlm"):
        nelbo_samples(tiny_model, ids, target_mask, attention_mask=attention_mask, estimator=estimator, k1=0.5,
                      mc_num=16, batch_size=8)
    hook.remove()
    noisy = torch.cat(seen)  # [forwarded rows, L]
    assert len(noisy) >= 2 * 2 * 16
    same_context = (noisy[:, None, :5] == ids[None, :, :5]).all(-1)  # [rows, 2]: context equals a clean one
    assert bool(same_context.any(-1).all())
    assert bool((noisy[:, 5:] == tiny_model.config.mask_token_id).any())


def test_likelihood_rejects_bad_input(tiny_model, sequence):
    ids, target_mask = sequence
    with pytest.raises(ValueError, match="estimator"):
        nelbo_samples(tiny_model, ids, target_mask, estimator="elbo")
    with pytest.raises(ValueError, match="k1"):
        nelbo_samples(tiny_model, ids, target_mask, estimator="xdlm", k1=1.5)
    with pytest.raises(ValueError, match="at least one True"):
        nelbo_samples(tiny_model, ids, torch.zeros_like(target_mask))
    with pytest.raises(ValueError, match="bool tensor"):
        nelbo_samples(tiny_model, ids, target_mask.long())


# ---- the lm-eval model ----------------------------------------------------------------------------------------


def make_lm(checkpoint, **kwargs) -> XDLMEvalLM:
    args = dict(pretrained=checkpoint, device="cpu", steps=4, gen_length=8, mc_num=8, batch_size=4, dtype="float32")
    return XDLMEvalLM(**{**args, **kwargs})


PROMPTS = [
    "The json module",
    "A short prompt",
    "This module provides regular expression matching operations similar to those found in Perl",
    "Heap queue",
    "The random module implements pseudo-random number generators",
]


def gen_requests(prompts, **gen_kwargs):
    return [Instance("generate_until", {}, (p, {"until": [], **gen_kwargs}), i) for i, p in enumerate(prompts)]


def test_generate_until_same_at_batch_size_1_and_4(checkpoint):
    one = make_lm(checkpoint, batch_size=1).generate_until(gen_requests(PROMPTS))
    four = make_lm(checkpoint, batch_size=4).generate_until(gen_requests(PROMPTS))
    assert one == four
    assert all(isinstance(text, str) for text in one) and any(one)


def test_generate_until_cuts_at_stop_strings_and_max_gen_toks(checkpoint, tiny_tokenizer):
    lm = make_lm(checkpoint, k1=0.0)
    full = lm.generate_until(gen_requests(PROMPTS))
    text = max(full, key=len)
    i = full.index(text)
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = lm.generate_until(gen_requests([PROMPTS[i]], until=[stop]))[0]
    assert cut == text[: text.find(stop)]
    short = lm.generate_until(gen_requests([PROMPTS[i]], max_gen_toks=2))[0]
    assert text.startswith(short) and len(tiny_tokenizer(short, add_special_tokens=False)["input_ids"]) <= 2


def test_loglikelihood_is_deterministic_and_checks_greedy(checkpoint):
    lm = make_lm(checkpoint, k1=0.0, gen_length=4)
    context = "The json module"
    greedy = lm.generate_until(gen_requests([context]))[0]  # 4 tokens, 4 steps: one token per step, argmax
    requests = [Instance("loglikelihood", {}, (context, c), i) for i, c in enumerate([greedy, " heap queue"])]
    first, second = lm.loglikelihood(requests), lm.loglikelihood(requests[::-1])[::-1]
    assert first == second  # seeded by the request, not by call order
    (ll_greedy, is_greedy), (ll_other, is_other) = first
    assert is_greedy and not is_other
    assert ll_greedy < 0 and ll_other < 0


def test_loglikelihood_rolling_is_the_sum_of_the_bounds_of_disjoint_windows(checkpoint):
    """max_length 8: the text's N tokens are scored in windows of 7 (the last may be shorter), each after the
    tokens that precede it (the BOS token for the first), as many as fill the window's 8 positions. Expected: minus
    the sum of each window's exact k1 = 0 bound (by enumeration). The estimate of each window is a mean of mc_num
    samples whose variance (stratified) is at most the variance of one unstratified sample / mc_num, also by
    enumeration: the total must lie within 5 such standard errors, which is far less than any one window's value."""
    text = "This module provides regular expression matching operations similar to those found in Perl."
    lm = make_lm(checkpoint, max_length=8, gen_length=4, mc_num=128, batch_size=128)
    (total,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    ids = lm._encode(text)
    padded = [lm.tokenizer.bos_token_id] + ids
    bounds, variance = [], 0.0
    for start in range(0, len(ids), 7):
        target = ids[start : start + 7]
        context = padded[: start + 1][-(8 - len(target)):]
        row = torch.tensor([context + target])
        target_mask = torch.zeros_like(row, dtype=torch.bool)
        target_mask[0, len(context):] = True
        values, probs = mdlm_sample_distribution(lm.model, row, target_mask)
        bounds.append(float((probs * values).sum()))
        variance += float((probs * values**2).sum()) - bounds[-1] ** 2
    se = math.sqrt(variance / 128)
    assert len(bounds) >= 3 and 5 * se < min(bounds)
    assert abs(total - -sum(bounds)) < 5 * se, (total, -sum(bounds), se)


@pytest.mark.parametrize(
    "model_args,message",
    [
        ("pretrained=x,stepz=32", r"unknown model_args \['stepz'\].*valid keys"),
        ("steps=32", "needs pretrained="),
        ("pretrained=x,likelihood=elbo", "likelihood='elbo' is not one of"),
        ("pretrained=x,batch_size=auto", "batch_size='auto' must be a positive integer"),
        ("pretrained=x,mode=opencompass", "mode='opencompass' is not one of"),
        ("pretrained=./no/such/checkpoint", "no model at ./no/such/checkpoint"),
        ("pretrained=/tmp/no-such-checkpoint-dir", "no model at /tmp/no-such-checkpoint-dir"),
        ("pretrained=x,dtype=fp8", "dtype='fp8'"),
    ],
)
def test_bad_model_args_fail_before_loading(model_args, message):
    with pytest.raises(ValueError, match=message):
        XDLMEvalLM.create_from_arg_string(model_args, {"batch_size": 1, "device": None})


@pytest.mark.parametrize(
    "sampler_args,message",
    [
        ("steps=30,gen_length=256,block_length=64", "steps=30 cannot be split evenly over 4 blocks"),
        ("gen_length=100,block_length=64", "not a multiple of block_length"),
        ("k1=2", r"k1=2 must lie in \[0, 1\]"),
        ("refine_budget=step", "refine_budget='step' is not one of"),
        ("remasking=greedy", "remasking='greedy'"),
    ],
)
def test_bad_sampler_model_args_fail_before_the_weights_load(checkpoint, monkeypatch, sampler_args, message):
    """The sampler settings are checked once the checkpoint's config (its sampler defaults) is read, before the
    weights: a weight load fails the test."""
    monkeypatch.setattr(LLaDAModelLM, "from_pretrained", lambda *a, **k: pytest.fail("weights loaded"))
    with pytest.raises(ValueError, match=message):
        XDLMEvalLM.create_from_arg_string(f"pretrained={checkpoint},{sampler_args}", {"batch_size": 1, "device": None})


def test_model_args_take_precedence_over_harness_settings(checkpoint):
    lm = XDLMEvalLM.create_from_arg_string(f"pretrained={checkpoint},batch_size=3,steps=4,gen_length=8,device=cpu",
                                           {"batch_size": 1, "max_batch_size": None, "device": "cuda:0"})
    assert lm.batch_size == 3 and lm.device.type == "cpu" and lm.sampler.k1 == lm.model.config.k1
    lm = XDLMEvalLM.create_from_arg_string(f"pretrained={checkpoint},steps=4,gen_length=8,device=cpu",
                                           {"batch_size": "5", "max_batch_size": None, "device": None})
    assert lm.batch_size == 5  # `lm_eval --batch_size 5` passes the text "5"


# ---- mode=paper: the XDLM authors' decoding -------------------------------------------------------------------


def test_paper_mode_defaults_to_the_block_budget_and_batch_one(checkpoint):
    lm = XDLMEvalLM.create_from_arg_string(f"pretrained={checkpoint},mode=paper,device=cpu,max_length=512",
                                           {"batch_size": 1})
    assert lm.sampler.refine_budget == "block" and lm.sampler.gen_length == 256 and lm.batch_size == 1
    lm = make_lm(checkpoint, mode="paper", refine_budget="global")
    assert lm.sampler.refine_budget == "global"
    assert make_lm(checkpoint).sampler.refine_budget == "global"


class EOSAt(torch.nn.Module):
    """Wraps a model so that canvas position `position` predicts EOS with certainty (a text that ends early)."""

    def __init__(self, model, position, eos_id):
        super().__init__()
        self.model, self.position, self.eos_id, self.config = model, position, eos_id, model.config

    def forward(self, input_ids, attention_mask=None):
        out = self.model(input_ids, attention_mask=attention_mask)
        out.logits[:, self.position, self.eos_id] = 100.0
        return out


def test_paper_mode_decodes_the_whole_span_and_cuts_at_the_first_stop_word(checkpoint, tiny_tokenizer):
    """The authors' pipeline spelled out: tokenizer(prompt) with its own special tokens (here: none, so the BOS
    that mode "standard" adds must not appear), generate with the block budget and no EOS handling, decode the
    generated span with special tokens skipped (text after the EOS kept), split at the stop word."""
    tiny_tokenizer = copy.deepcopy(tiny_tokenizer)  # the session's tokenizer stays as it is
    tiny_tokenizer._tokenizer.post_processor = None  # a tokenizer that adds no special tokens
    tiny_tokenizer.save_pretrained(checkpoint)
    lm = make_lm(checkpoint, mode="paper", batch_size=1, k1=0.5, steps=4, gen_length=8)
    prompt = PROMPTS[2]
    ids = torch.tensor([tiny_tokenizer(prompt)["input_ids"]])
    assert ids[0, 0] != tiny_tokenizer.bos_token_id
    lm.model = EOSAt(lm.model, ids.shape[1] + 2, tiny_tokenizer.eos_token_id)
    out = generate(lm.model, ids, steps=4, gen_length=8, k1=0.5, refine_budget="block")
    gen = out[0, ids.shape[1]:]
    assert gen[2] == tiny_tokenizer.eos_token_id and (gen[3:] != tiny_tokenizer.eos_token_id).any()
    raw = tiny_tokenizer.decode(gen, skip_special_tokens=True)
    assert lm.generate_until(gen_requests([prompt]))[0] == raw
    stop = raw[len(raw) // 2 : len(raw) // 2 + 2]
    assert lm.generate_until(gen_requests([prompt], until=[stop]))[0] == raw.split(stop)[0]
    # max_gen_toks is ignored, as the authors' harness ignores max_out_len
    assert lm.generate_until(gen_requests([prompt], max_gen_toks=2))[0] == raw


def test_paper_mode_keeps_text_after_an_eos_standard_mode_stops_there(checkpoint, tiny_tokenizer):
    words = tiny_tokenizer("Heap queue", add_special_tokens=False)["input_ids"]
    more = tiny_tokenizer(" module", add_special_tokens=False)["input_ids"]
    span = words + [tiny_tokenizer.eos_token_id] + more
    paper, standard = make_lm(checkpoint, mode="paper"), make_lm(checkpoint)
    assert paper._decode(span) == tiny_tokenizer.decode(words + more, skip_special_tokens=True)
    assert standard._decode(span) == tiny_tokenizer.decode(words, skip_special_tokens=True)


def test_paper_mode_refuses_a_prompt_that_does_not_fit_standard_mode_warns(checkpoint, caplog):
    long_prompt = " ".join(PROMPTS * 4)
    paper = make_lm(checkpoint, mode="paper", max_length=24)
    with pytest.raises(ValueError, match="never truncates a prompt"):
        paper.generate_until(gen_requests([long_prompt]))
    standard = make_lm(checkpoint, max_length=24)
    with caplog.at_level("WARNING"):
        standard.generate_until(gen_requests([long_prompt]))
    assert "truncated to its last 16" in caplog.text


def test_generation_statistics_count_forwards_and_tokens(checkpoint, tmp_path):
    """5 prompts at batch size 2 are 3 generate() calls of `steps` forwards each (twice that with cfg);
    every prompt gets gen_length tokens. Written to stats_path."""
    path = tmp_path / "stats.json"
    lm = make_lm(checkpoint, batch_size=2, steps=4, gen_length=8, stats_path=str(path))
    lm.generate_until(gen_requests(PROMPTS))
    stats = json.loads(path.read_text())
    assert (stats["prompts"], stats["generated_tokens"], stats["forwards"]) == (5, 40, 12)
    assert stats["tokens_per_forward"] == 40 / 12 and stats["tokens_per_second"] > 0
    lm = make_lm(checkpoint, batch_size=2, steps=4, gen_length=8, cfg_scale=1.0)
    lm.generate_until(gen_requests(PROMPTS))
    assert lm.stats["forwards"] == 24
