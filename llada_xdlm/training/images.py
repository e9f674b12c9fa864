"""Images as token sequences for the light image recipes: each pixel value (grey level, or one RGB channel) is one
token "p<level>", read in raster order (channels last), so the ordinary text pipeline trains on them unchanged.

`xdlm prepare-images digits --levels 16 --out data/digits16` writes
  train.jsonl / validation.jsonl  one image per row: {"text": "p0 p3 p15 ..."} (H * W * C tokens)
  validation.npy                  the validation images as integer levels (a reference set for `xdlm fid`)
  tokenizer/                      a word-level tokenizer: <|startoftext|>, <|endoftext|>, <|mdm_mask|>, p0..p{L-1}
With the recipe's `block_size` = H * W * C + 1 and `random_length_prob: 0`, every packed block is exactly one image
followed by its EOS separator (the packer appends EOS to every row). `cifar10` needs the Hub (uoft-cs/cifar10).
"""

import argparse
import json
import os

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ..tokenization import BOS, EOS, MASK

SPECIALS = [BOS, EOS, MASK]


def pixel_tokenizer(levels: int) -> PreTrainedTokenizerFast:
    """Word-level tokenizer with ids 0..2 = bos, eos (= pad), mask and ids 3.. = pixel levels p0..p{levels-1}."""
    if not 2 <= levels <= 4096:
        raise ValueError(f"levels={levels} must be in [2, 4096] (digits: 16, CIFAR-10: 256).")
    vocab = {tok: i for i, tok in enumerate(SPECIALS + [f"p{v}" for v in range(levels)])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=MASK))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                                   mask_token=MASK)


def pixel_levels(tokenizer) -> int:
    """How many grey levels a pixel tokenizer has (its tokens p0 .. p{L-1}); 0 for any other tokenizer."""
    return sum(1 for token in tokenizer.get_vocab() if token[:1] == "p" and token[1:].isdigit())


def levels_to_images(levels: np.ndarray, num_levels: int) -> np.ndarray:
    """Integer pixel levels in [0, num_levels) -> float32 images in [0, 1] (level / (num_levels - 1))."""
    return (np.asarray(levels) / (num_levels - 1)).astype(np.float32)


def images_to_texts(levels: np.ndarray) -> list[str]:
    """Integer pixel levels [N, H, W] or [N, H, W, C] -> one "p<v> p<v> ..." string per image (raster order)."""
    flat = np.asarray(levels).reshape(len(levels), -1)
    return [" ".join(f"p{int(v)}" for v in row) for row in flat]


def ids_to_images(ids, tokenizer, shape: tuple[int, ...], levels: int) -> np.ndarray:
    """Generated ids [N, >= prod(shape)] (a sample's first prod(shape) tokens) -> images in [0, 1] [N, *shape].
    Any id that is not a pixel (a special token left by the sampler) becomes level 0, so it counts against FID."""
    n = int(np.prod(shape))
    ids = np.asarray(ids)[:, :n]
    first = tokenizer.convert_tokens_to_ids("p0")
    values = ids - first
    values = np.where((values >= 0) & (values < levels), values, 0)
    return levels_to_images(values, levels).reshape(len(ids), *shape)


DIGITS_LEVELS = 17  # scikit-learn's digits hold the integers 0 .. 16


def digits_levels(levels: int = DIGITS_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits quantised to `levels` grey levels (17: as stored): int [1797, 8, 8] and labels
    [1797]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.round(digits.images / 16.0 * (levels - 1)).astype(np.int64), digits.target


def cifar10_levels() -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 train and test images as uint8 [N, 32, 32, 3] (256 levels) from the Hub (uoft-cs/cifar10)."""
    from datasets import load_dataset

    data = load_dataset("uoft-cs/cifar10")
    return tuple(np.stack([np.asarray(img) for img in data[split]["img"]]) for split in ("train", "test"))


def write_image_corpus(train: np.ndarray, validation: np.ndarray, levels: int, out: str) -> None:
    """Write train.jsonl, validation.jsonl, validation.npy and tokenizer/ under `out` (see the module docstring)."""
    os.makedirs(out, exist_ok=True)
    for name, images in (("train", train), ("validation", validation)):
        if images.min() < 0 or images.max() >= levels:
            raise ValueError(f"{name} pixel levels span [{images.min()}, {images.max()}], not [0, {levels}).")
        with open(os.path.join(out, f"{name}.jsonl"), "w") as f:
            for text in images_to_texts(images):
                f.write(json.dumps({"text": text}) + "\n")
    np.save(os.path.join(out, "validation.npy"), validation)
    pixel_tokenizer(levels).save_pretrained(os.path.join(out, "tokenizer"))


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`xdlm prepare-images`: write an image corpus and its pixel tokenizer (see the module docstring)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["digits", "cifar10"])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--levels", type=int, default=None, help="grey levels (digits: 16; cifar10 is 256)")
    parser.add_argument("--validation", type=int, default=197, help="digits: images held out for validation")
    args = parser.parse_args(argv)
    if args.dataset == "digits":
        levels = args.levels or 16
        images, _ = digits_levels(levels)
        rng = np.random.default_rng(0)
        order = rng.permutation(len(images))
        train, validation = images[order[args.validation :]], images[order[: args.validation]]
    else:
        if args.levels not in (None, 256):
            raise ValueError(f"--levels {args.levels}: cifar10 pixels are 8-bit, use 256.")
        levels = 256
        train, validation = cifar10_levels()
    write_image_corpus(train, validation, levels, args.out)
    print(f"wrote {len(train)} train / {len(validation)} validation images, {levels} levels, to {args.out}")
