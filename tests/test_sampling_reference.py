"""generate(..., compat="xdlm-authors"): the XDLM authors' sampler (their generate_xdm, and generate_mdm at k1 = 0)
token for token, quirks included, against an independent re-implementation of their published algorithm."""

import pytest
import torch
import torch.nn.functional as F

from llada_xdlm import generate

from test_sampling import Boost, _prompts


def authors_sampler(model, prompt, attention_mask, steps, gen_length, block_length, k1, mask_id, temperature=0.0,
                    generator=None):
    """The authors' algorithm, step by step and row by row: per block a precomputed even split of the block's masks
    over its steps (remainder first) and, for k1 > 0, per-step rewrite allowances from the cumulative schedule
    (cumulative fills * k1 / (1 - k1), truncated, 0 at the block's first step), an allowance a step leaves unused
    passing to the next step of the block. Each step: x0 = argmax of the logits (all ids, the mask included), or of
    exp(logits) / (-log u)^temperature with float64 uniforms u; p = softmax in the logits' dtype; masks before the
    block's end are filled by top p(x0); every other position before the block's end (prompt included) whose x0
    differs with p(x0) >= p(current) may be rewritten, top p(x0) first."""
    B, P = prompt.shape
    x = torch.cat([prompt, torch.full((B, gen_length), mask_id)], dim=1)
    am = torch.cat([attention_mask, torch.ones(B, gen_length, dtype=attention_mask.dtype)], dim=1)
    per_block = steps // (gen_length // block_length)
    for nb in range(gen_length // block_length):
        hi = P + (nb + 1) * block_length
        n_masks = (x[:, hi - block_length:hi] == mask_id).sum(1).tolist()
        fills = torch.tensor([[n // per_block + (i < n % per_block) for i in range(per_block)] for n in n_masks])
        allowance = (fills.cumsum(1) * k1 / (1 - k1)).int()  # [B, per_block] cumulative
        allowance[:, 0] = 0
        allowance = torch.diff(allowance, dim=1, prepend=torch.zeros(B, 1, dtype=allowance.dtype))  # per step
        for i in range(per_block):
            is_mask = x == mask_id
            logits = model(x, attention_mask=am).logits
            if temperature > 0:
                u = torch.rand(logits.shape, dtype=torch.float64, generator=generator)
                x0 = (logits.to(torch.float64).exp() / (-torch.log(u)) ** temperature).argmax(-1)
            else:
                x0 = logits.argmax(-1)
            p = F.softmax(logits, dim=-1)
            p_x0 = p.gather(-1, x0[..., None])[..., 0]
            p_x = p.gather(-1, x[..., None])[..., 0]
            p_x0[:, hi:] = -torch.inf
            fill_conf = torch.where(is_mask, p_x0, -torch.inf)
            may_rewrite = ~is_mask & (x0 != x) & (p_x0 >= p_x)
            rewrite_conf = torch.where(may_rewrite, p_x0, -torch.inf)
            chosen = torch.zeros_like(is_mask)
            for j in range(B):
                chosen[j, fill_conf[j].topk(int(fills[j, i])).indices] = True
                if k1 > 0:
                    k = min(int(may_rewrite[j].sum()), int(allowance[j, i]))
                    if i < per_block - 1:
                        allowance[j, i + 1] += allowance[j, i] - k
                    chosen[j, rewrite_conf[j].topk(k).indices] = True
            x[chosen] = x0[chosen]
    return x


SETTINGS = [  # gen_length, block_length, steps, k1: one block, several blocks, 1 fill a step, more steps than masks
    (16, 16, 8, 0.5),
    (24, 8, 6, 0.1),
    (24, 8, 6, 0.0),
    (24, 12, 12, 0.3),
    (8, 4, 12, 0.3),
    (194, 194, 2, 0.03),  # 194 fills: their float32 budget int(194 * 0.03 / 0.97) is 5, the exact floor 6
]


@pytest.fixture
def uneven_prompts(tiny_tokenizer):
    """Two prompts of different lengths, left-padded."""
    return _prompts(tiny_tokenizer, ["The quick brown fox", "A module that provides a simple interface to files"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("gen_length, block_length, steps, k1", SETTINGS)
def test_authors_compat_matches_their_algorithm_token_for_token(tiny_model, tiny_config, uneven_prompts, dtype,
                                                                 gen_length, block_length, steps, k1):
    ids, am = uneven_prompts
    model = tiny_model.to(dtype)
    settings = dict(steps=steps, gen_length=gen_length, block_length=block_length, k1=k1)
    ref = authors_sampler(model, ids, am, mask_id=tiny_config.mask_token_id, **settings)
    ours = generate(model, ids, am, compat="xdlm-authors", refine_budget="block", **settings)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_authors_compat_matches_their_algorithm_with_gumbel_noise_and_a_tempting_mask(tiny_model, tiny_config,
                                                                                        uneven_prompts, dtype):
    """temperature > 0 (the same float64 uniforms from the same seed), and a model that often prefers the mask id,
    which their sampler then writes (a fill that stays a mask, a token turned back into a mask)."""
    ids, am = uneven_prompts
    mask_id = tiny_config.mask_token_id
    model = Boost(tiny_model.to(dtype), mask_id, 3.0)
    for temperature in (0.0, 1.0):
        settings = dict(steps=8, gen_length=16, block_length=8, k1=0.3, temperature=temperature)
        ref = authors_sampler(model, ids, am, mask_id=mask_id, generator=torch.Generator().manual_seed(7), **settings)
        ours = generate(model, ids, am, compat="xdlm-authors", refine_budget="block",
                        generator=torch.Generator().manual_seed(7), **settings)
        assert torch.equal(ours, ref)
        assert (ours == mask_id).any(), "the tempting mask should survive somewhere, or the quirk is not exercised"


def test_authors_compat_rewrites_the_prompt_and_the_default_never_does(tiny_model, uneven_prompts):
    ids, am = uneven_prompts
    settings = dict(steps=8, gen_length=16, block_length=8, k1=0.5)
    theirs = generate(tiny_model, ids, am, compat="xdlm-authors", refine_budget="block", **settings)
    ours = generate(tiny_model, ids, am, refine_budget="block", **settings)
    assert not torch.equal(theirs[:, :ids.shape[1]], ids)
    assert torch.equal(ours[:, :ids.shape[1]], ids)


def test_authors_compat_emits_the_mask_id_and_the_default_never_does(tiny_model, tiny_config, uneven_prompts):
    ids, am = uneven_prompts
    mask_id = tiny_config.mask_token_id
    model = Boost(tiny_model, mask_id, 3.0)
    for k1 in (0.0, 0.3):
        settings = dict(steps=8, gen_length=16, block_length=8, k1=k1)
        theirs = generate(model, ids, am, compat="xdlm-authors", refine_budget="block", **settings)
        ours = generate(model, ids, am, refine_budget="block", **settings)
        assert (theirs[:, ids.shape[1]:] == mask_id).any()
        assert not (ours == mask_id).any()


@pytest.mark.parametrize("kwargs, match", [
    (dict(refine_budget="global"), "refine_budget='block'"),
    (dict(cache="prefix"), "cache='prefix' is not part"),
    (dict(threshold=0.9), "threshold=0.9 is not part"),
    (dict(cfg_scale=1.0), "cfg_scale=1.0 is not part"),
    (dict(remasking="random"), "remasking='random' is not part"),
    (dict(sampler="ancestral", refine_budget="global"), "sampler='ancestral'"),
    (dict(k1=1.0), "k1 < 1"),
    (dict(compat="authors"), "compat='authors' is not one of"),
])
def test_authors_compat_refuses_what_their_sampler_lacks(tiny_model, uneven_prompts, kwargs, match):
    settings = {"compat": "xdlm-authors", "refine_budget": "block", **kwargs}
    with pytest.raises(ValueError, match=match):
        generate(tiny_model, *uneven_prompts, steps=4, gen_length=8, **settings)


def test_lm_eval_model_args_select_the_authors_sampler(checkpoint):
    from llada_xdlm.evaluation.lm_eval_model import XDLMEvalLM

    lm = XDLMEvalLM.create_from_arg_string(f"pretrained={checkpoint},mode=paper,compat=xdlm-authors,device=cpu,"
                                           f"max_length=512", {"batch_size": 1})
    assert lm.sampler.compat == "xdlm-authors" and lm.sampler.refine_budget == "block"  # mode=paper's budget rule
    with pytest.raises(ValueError, match="pass refine_budget='block'"):  # mode=standard counts it globally
        XDLMEvalLM.create_from_arg_string(f"pretrained={checkpoint},compat=xdlm-authors,device=cpu", {"batch_size": 1})
