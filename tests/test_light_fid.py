"""FID: the Frechet distance itself, the digits feature extractor, pixel tokens <-> images, and `xdlm fid`."""

import sys

import numpy as np
import pytest

from llada_xdlm.evaluation import fid as fid_command
from llada_xdlm.evaluation.fid import (
    DigitsFeatures,
    InceptionFeatures,
    feature_statistics,
    fid,
    frechet_distance,
    load_digits_images,
)
from llada_xdlm.training.images import digits_levels, ids_to_images, images_to_texts, pixel_levels, pixel_tokenizer


@pytest.fixture(scope="module")
def digits_features():
    return DigitsFeatures(seed=0)


def test_fid_of_a_set_with_itself_is_zero():
    feats = np.random.default_rng(0).normal(size=(400, 16))
    assert abs(fid(feats, feats)) < 1e-6


def test_frechet_distance_matches_closed_form_for_two_gaussians():
    # Diagonal covariances: FD = |mu1 - mu2|^2 + sum_i (sqrt(s1_i) - sqrt(s2_i))^2.
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, -1.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 1.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)
    # The same pair after one common rotation (non-diagonal, non-commuting products): FD is rotation invariant.
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    rotated = frechet_distance(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-8)


def test_fid_of_samples_converges_to_the_closed_form():
    rng = np.random.default_rng(2)
    a = rng.normal(0.0, 1.0, size=(200_000, 2))
    b = rng.normal([3.0, 0.0], [2.0, 0.5], size=(200_000, 2))
    expected = 9.0 + (1 - 2.0) ** 2 + (1 - 0.5) ** 2
    assert fid(a, b) == pytest.approx(expected, rel=0.02)


def test_feature_statistics_and_shapes_are_checked():
    mu, sigma = feature_statistics(np.ones((5, 3)))
    assert mu.shape == (3,) and sigma.shape == (3, 3)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(np.ones((1, 3)))
    with pytest.raises(ValueError, match="same extractor"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_inception_features_name_the_pip_package_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_fid", None)  # import of a None entry raises ImportError
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    with pytest.raises(ImportError, match="pip install pytorch-fid"):
        InceptionFeatures()


def test_digits_features_separate_real_digits_from_noise(digits_features):
    assert digits_features.train_accuracy > 0.97
    images, _ = load_digits_images(levels=16)
    real_a, real_b = digits_features(images[::2]), digits_features(images[1::2])
    noise = np.random.default_rng(0).integers(0, 16, size=(900, 8, 8)) / 15
    real_vs_real = fid(real_a, real_b)
    real_vs_noise = fid(real_a, digits_features(noise))
    assert real_vs_noise > 50 * real_vs_real
    with pytest.raises(ValueError, match="8x8"):
        digits_features(np.zeros((4, 16, 16)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        digits_features(np.full((4, 8, 8), 15.0))


def test_digits_images_are_the_stored_values_over_16_or_quantised_to_the_levels_asked():
    from sklearn.datasets import load_digits

    raw = load_digits().images  # integers 0 .. 16
    np.testing.assert_array_equal(load_digits_images()[0], (raw / 16).astype(np.float32))
    four = load_digits_images(levels=4)[0]  # 0, 1/3, 2/3, 1: the nearest of 4 levels to raw / 16
    np.testing.assert_allclose(four, np.round(raw / 16 * 3) / 3, atol=1e-6)
    assert len(np.unique(four)) == 4


def test_pixel_tokens_round_trip_to_images(tiny_tokenizer):
    tokenizer = pixel_tokenizer(16)
    assert pixel_levels(tokenizer) == 16
    assert pixel_levels(tiny_tokenizer) == 0  # a text tokenizer (tokens such as "pe") has none
    levels, _ = digits_levels(16)
    ids = tokenizer(images_to_texts(levels[:5]), add_special_tokens=False)["input_ids"]
    assert all(len(row) == 64 for row in ids)
    images = ids_to_images(np.array(ids), tokenizer, (8, 8), 16)
    np.testing.assert_allclose(images, levels[:5] / 15, atol=1e-6)
    ids = np.array(ids)
    ids[0, 0] = tokenizer.mask_token_id  # a special token decodes to level 0
    assert ids_to_images(ids, tokenizer, (8, 8), 16)[0, 0, 0] == 0.0


def test_fid_command_on_saved_image_sets(tmp_path):
    levels, _ = digits_levels(16)
    np.save(tmp_path / "a.npy", levels[:600])
    np.save(tmp_path / "b.npy", levels[600:1200])
    out = tmp_path / "fid.json"
    result = fid_command.main(["--samples", str(tmp_path / "a.npy"), "--reference", str(tmp_path / "b.npy"),
                               "--levels", "16", "--features", "digits", "--output", str(out)])
    assert out.exists()
    assert 0 <= result["samples"]["fid"] < 5
