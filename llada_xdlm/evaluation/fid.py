"""Frechet distance between image feature distributions (FID), with a pluggable feature extractor.

FID = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)) between Gaussians fitted to the features of two image
sets. The standard features are Inception-v3 pool3 activations (pytorch-fid or torch-fidelity, loaded lazily and
only when asked for); small CPU-scale image sets (the 8x8 digits) use `DigitsFeatures`, the hidden layer of a small
classifier trained on scikit-learn's digits, so numbers are comparable between our runs (not with published FIDs).

    extractor = DigitsFeatures(seed=0)
    score = fid(extractor(reference_images), extractor(generated_images))

Images are float arrays in [0, 1], [N, H, W] (grey) or [N, H, W, 3].

`xdlm fid` scores a pixel-token checkpoint's samples or a saved image set:

    # samples from a pixel-token checkpoint (recipes/digits_small.yaml), 8 ancestral steps, small-classifier features
    xdlm fid --model outputs/digits_small --steps 8 --num_samples 1000 --features digits
    # CIFAR-10 pixels with Inception features (pip install pytorch-fid), reference = saved test images
    xdlm fid --model outputs/cifar10_pixels --image_shape 32 32 3 --reference cifar10_test.npy \
        --features inception --num_samples 10000 --steps 8 --device cuda
    # two saved image sets (.npy, float in [0, 1] or integer levels with --levels)
    xdlm fid --samples generated.npy --reference reference.npy --features inception

Reference "digits" = all 1797 scikit-learn digits quantised to the model's grey levels.
"""

import argparse
import os
import warnings

import numpy as np
import torch
from scipy import linalg

from ..training.images import DIGITS_LEVELS, digits_levels, ids_to_images, levels_to_images, pixel_levels


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (float64, unbiased) of features [N, D], N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be [N, D] with N >= 2 samples; got shape {features.shape}.")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2). When the product of the covariances is singular
    (fewer samples than dimensions) its square root is taken after adding eps * I to both, as pytorch-fid does."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"shapes do not match: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}; "
            "use features of the same extractor for both sets."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if caught or not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm(S1 S2) has imaginary part {np.abs(covmean.imag).max():.3g}: covariances are "
                             "not positive semi-definite (too few or non-finite features).")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid(features_a, features_b) -> float:
    """Frechet distance between the Gaussians fitted to two feature sets [N_a, D] and [N_b, D]."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def check_images(images) -> np.ndarray:
    """float32 [N, H, W] or [N, H, W, 3] in [0, 1], or a clear error."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise ValueError(f"images must be [N, H, W] (grey) or [N, H, W, 3]; got shape {images.shape}.")
    if images.size and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"image values must lie in [0, 1]; got [{images.min()}, {images.max()}]. Divide by the "
                         "number of grey levels minus 1.")
    return images


class InceptionFeatures:
    """Inception-v3 pool3 features (2048-d), the standard FID features, from pytorch-fid (preferred) or
    torch-fidelity. Neither is a dependency: install one (`pip install pytorch-fid`). Weights download on first use."""

    def __init__(self, device: str = "cpu", batch_size: int = 50):
        self.device, self.batch_size = device, batch_size
        try:
            from pytorch_fid.inception import InceptionV3
        except ImportError:
            InceptionV3 = None
        if InceptionV3 is not None:
            self.net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()
            self.forward = lambda x: self.net(x)[0].flatten(1)  # input in [0, 1], resized inside
            return
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as err:
            raise ImportError(
                "Inception FID features need pytorch-fid or torch-fidelity: `pip install pytorch-fid` (or "
                "`pip install torch-fidelity`), or pass another extractor (e.g. --features digits)."
            ) from err
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).to(device).eval()
        self.forward = lambda x: self.net((x * 255).round().to(torch.uint8))[0]  # expects uint8 [B, 3, H, W]

    @torch.no_grad()
    def __call__(self, images) -> np.ndarray:
        images = torch.from_numpy(check_images(images))
        if images.dim() == 3:
            images = images[..., None].expand(*images.shape, 3)
        images = images.permute(0, 3, 1, 2)  # [N, 3, H, W]
        feats = [self.forward(images[i : i + self.batch_size].to(self.device)).cpu()
                 for i in range(0, len(images), self.batch_size)]
        return torch.cat(feats).double().numpy()  # [N, 2048]


def load_digits_images(levels: int = DIGITS_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits as images in [0, 1] [N, 8, 8] and labels [N], quantised to `levels` grey
    levels (what a model trained on `levels`-level pixel tokens can produce; default: the 17 levels as stored)."""
    images, labels = digits_levels(levels)
    return levels_to_images(images, levels), labels


def load_images(path: str, levels: int | None) -> np.ndarray:
    """A .npy image array: floats in [0, 1], or integer pixel levels (then `levels` says how many)."""
    images = np.load(path)
    if np.issubdtype(images.dtype, np.integer):
        if levels is None:
            raise ValueError(f"{path} holds integer pixel levels: pass --levels (e.g. 256 for 8-bit images).")
        return levels_to_images(images, levels)
    return images.astype(np.float32)


def generate_images(model_dir: str, num_samples: int, steps: int, shape: tuple[int, ...], *, sampler: str,
                    batch_size: int, seed: int, device: str, k1: float | None = None) -> tuple[np.ndarray, int]:
    """Unconditional samples of a pixel-token checkpoint decoded to images in [0, 1]: ([N, *shape], levels)."""
    from ..checkpoint import load_checkpoint
    from .gen_ppl import sample_sequences

    model, tokenizer = load_checkpoint(model_dir, device)
    levels = pixel_levels(tokenizer)
    if levels < 2:
        raise ValueError(f"{model_dir} has no pixel tokenizer (p0, p1, ...): train it on `xdlm prepare-images` "
                         "data.")
    ids = sample_sequences(model, num_samples, int(np.prod(shape)), steps, sampler=sampler, batch_size=batch_size,
                           seed=seed, k1=k1)
    return ids_to_images(ids.numpy(), tokenizer, shape, levels), levels


class DigitsFeatures:
    """Features for 8x8 grey digits: the 64-unit hidden layer of a small MLP classifier trained here (a few
    seconds on CPU, seeded) on scikit-learn's digits. A learned, class-aware embedding, so the FID of these features
    reacts to malformed digits the way Inception features do at larger scale."""

    def __init__(self, seed: int = 0, hidden: int = 64, steps: int = 300):
        images, labels = load_digits_images()
        g = torch.Generator().manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)
        )
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.dim() == 2 else 0.0))
        x, y = torch.from_numpy(images), torch.from_numpy(labels)
        opt = torch.optim.Adam(self.net.parameters(), lr=1e-2)
        for _ in range(steps):  # full batch: 1797 images
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.net.eval()
        with torch.no_grad():
            self.train_accuracy = float((self.net(x).argmax(-1) == y).float().mean())

    @torch.no_grad()
    def __call__(self, images) -> np.ndarray:
        images = check_images(images)
        if images.shape[1:] != (8, 8):
            raise ValueError(f"DigitsFeatures takes 8x8 grey images; got {images.shape[1:]}.")
        return self.net[:3](torch.from_numpy(images)).double().numpy()  # [N, hidden]


FEATURES = {"inception": InceptionFeatures, "digits": DigitsFeatures}


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """`xdlm fid`: FID of generated (or saved) images against a reference set, one line per number of steps."""
    from .. import cli

    parser = argparse.ArgumentParser(prog=prog, description="FID of generated images against a reference set.")
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
    parser.add_argument("--save_samples", default=None, help="directory for the generated images (.npy per steps)")
    cli.add_run_options(parser, batch_size=64)
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
    if args.reference == "digits":
        reference = load_digits_images(levels or DIGITS_LEVELS)[0]
    else:
        reference = load_images(args.reference, levels)
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
    cli.write_json(args.output, results)
    return results
