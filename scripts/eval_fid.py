"""FID of generated images against a reference set.

    # samples from a pixel-token checkpoint (recipes/digits_small.yaml), 8 ancestral steps, small-classifier features
    python scripts/eval_fid.py --model outputs/digits_small --steps 8 --num_samples 1000 --features digits
    # CIFAR-10 pixels with Inception features (pip install pytorch-fid), reference = saved test images
    python scripts/eval_fid.py --model outputs/cifar10_pixels --image_shape 32 32 3 --reference cifar10_test.npy \
        --features inception --num_samples 10000 --steps 8 --device cuda
    # two saved image sets (.npy, float in [0, 1] or integer levels with --levels)
    python scripts/eval_fid.py --samples generated.npy --reference reference.npy --features inception

Features: "inception" (pytorch-fid / torch-fidelity Inception-v3, the standard; not installed by default) or
"digits" (llada_xdlm.evaluation.fid.DigitsFeatures: a small classifier trained on scikit-learn's 8x8 digits; its
FIDs compare our runs with each other, not with published Inception FIDs). Reference "digits" = all 1797
scikit-learn digits quantised to the model's grey levels.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

from llada_xdlm.evaluation.fid import FEATURES, DigitsFeatures, InceptionFeatures, fid, load_digits_images


def load_images(path: str, levels: int | None) -> np.ndarray:
    """A .npy image array: floats in [0, 1], or integer pixel levels scaled by (levels - 1)."""
    images = np.load(path)
    if np.issubdtype(images.dtype, np.integer):
        if levels is None:
            raise ValueError(f"{path} holds integer pixel levels: pass --levels (e.g. 256 for 8-bit images).")
        images = images / (levels - 1)
    return images.astype(np.float32)


def generate_images(model_dir: str, num_samples: int, steps: int, shape: tuple[int, ...], *, sampler: str,
                    batch_size: int, seed: int, device: str, k1: float | None = None) -> tuple[np.ndarray, int]:
    """Unconditional samples of a pixel-token checkpoint decoded to images in [0, 1]: ([N, *shape], levels)."""
    from transformers import AutoTokenizer

    from eval_gen_ppl import sample_sequences  # same folder
    from llada_xdlm import LLaDAModelLM
    from llada_xdlm.training.images import ids_to_images

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    levels = sum(1 for tok in tokenizer.get_vocab() if tok[:1] == "p" and tok[1:].isdigit())
    if levels < 2:
        raise ValueError(f"{model_dir} has no pixel tokenizer (p0, p1, ...): train it on llada_xdlm.training.images "
                         "data.")
    model = LLaDAModelLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    ids = sample_sequences(model, num_samples, int(np.prod(shape)), steps, sampler=sampler, batch_size=batch_size,
                           seed=seed, k1=k1)
    return ids_to_images(ids.numpy(), tokenizer, shape, levels), levels


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--samples", help=".npy of generated images")
    source.add_argument("--model", help="pixel-token diffusion checkpoint to sample from")
    parser.add_argument("--reference", default="digits", help="'digits' or a .npy of reference images")
    parser.add_argument("--features", choices=sorted(FEATURES), default="inception")
    parser.add_argument("--levels", type=int, default=None, help="pixel levels of integer .npy arrays")
    parser.add_argument("--image_shape", type=int, nargs="+", default=[8, 8], help="H W [C] of generated images")
    parser.add_argument("--num_samples", type=int, default=1000)
    parser.add_argument("--steps", type=int, nargs="+", default=[8])
    parser.add_argument("--sampler", choices=["ancestral", "remask"], default="ancestral")
    parser.add_argument("--k1", type=float, default=None, help="sampler k1 (default: the checkpoint's config.k1)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--save_samples", default=None, help="directory for the generated images (.npy per steps)")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    extractor = InceptionFeatures(device=args.device) if args.features == "inception" else DigitsFeatures()
    generated = {}
    levels = args.levels
    if args.samples:
        generated[None] = load_images(args.samples, args.levels)
    else:
        for steps in args.steps:
            generated[steps], levels = generate_images(
                args.model, args.num_samples, steps, tuple(args.image_shape), sampler=args.sampler,
                batch_size=args.batch_size, seed=args.seed, device=args.device, k1=args.k1)
            if args.save_samples:
                os.makedirs(args.save_samples, exist_ok=True)
                np.save(os.path.join(args.save_samples, f"samples_{steps}steps.npy"), generated[steps])
    reference = load_digits_images(levels)[0] if args.reference == "digits" else load_images(args.reference, levels)
    ref_features = extractor(reference)
    results = {}
    for steps, images in generated.items():
        score = fid(ref_features, extractor(images))
        key = "samples" if steps is None else f"{steps}_steps"
        results[key] = dict(fid=score, steps=steps, num_samples=len(images), reference=args.reference,
                            reference_size=len(reference), features=args.features, sampler=args.sampler,
                            seed=args.seed)
        print(f"{key:>10}  FID {score:8.3f}  ({len(images)} vs {len(reference)} {args.reference} images, "
              f"{args.features} features)")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
