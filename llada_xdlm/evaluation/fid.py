"""Frechet distance between image feature distributions (FID), with a pluggable feature extractor.

FID = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)) between Gaussians fitted to the features of two image
sets. The standard features are Inception-v3 pool3 activations (pytorch-fid or torch-fidelity, loaded lazily and
only when asked for); small CPU-scale image sets (the 8x8 digits) use `DigitsFeatures`, the hidden layer of a small
classifier trained on scikit-learn's digits, so numbers are comparable between our runs (not with published FIDs).

    extractor = DigitsFeatures(seed=0)
    score = fid(extractor(reference_images), extractor(generated_images))

Images are float arrays in [0, 1], [N, H, W] (grey) or [N, H, W, 3].
"""

import warnings

import numpy as np
import torch
from scipy import linalg


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


def load_digits_images(levels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits as images in [0, 1] [N, 8, 8] and labels [N]; with `levels`, quantised to
    that many grey levels first (what a model trained on `levels`-level pixel tokens can produce)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images / 16.0  # raw values 0..16
    if levels is not None:
        images = np.round(images * (levels - 1)) / (levels - 1)
    return images.astype(np.float32), digits.target


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
