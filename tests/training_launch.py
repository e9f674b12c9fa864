"""Test helper: run the real training entry point, optionally with deterministic noise.

`python tests/training_launch.py RECIPE.yaml [--key value ...]` (also under `accelerate launch`). With
XDLM_FIXED_NOISE=1 the noise depends only on each token's id and position (t = 0.5; a token is masked when
(id + position) is even), so runs that split the same global batch differently over processes or
gradient-accumulation micro-batches see identical noise and must give identical updates.
"""

import os
import sys

import torch

import llada_xdlm.diffusion as diffusion
from llada_xdlm.training.train import main


def fixed_sample_t(batch, eps=1e-3, antithetic=False, generator=None, device=None):
    return torch.full((batch,), 0.5, device=device)


def fixed_forward_process(clean_ids, alpha_t, k1, mask_id, vocab_size, generator=None, keep_mask=None):
    positions = torch.arange(clean_ids.shape[1], device=clean_ids.device)
    masked = (clean_ids + positions) % 2 == 0  # [B, L]
    if keep_mask is not None:
        masked &= ~keep_mask
    return clean_ids.masked_fill(masked, mask_id)


if __name__ == "__main__":
    if os.environ.get("XDLM_FIXED_NOISE") == "1":
        diffusion.sample_t = fixed_sample_t
        diffusion.forward_process = fixed_forward_process
    main(sys.argv[1:])
