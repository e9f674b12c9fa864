"""Shared fixtures: a tiny LLaDA-like tokenizer trained on real English text, and a tiny LLaDA model."""

import importlib

import pytest
import torch

from llada_xdlm import LLaDAConfig, LLaDAModelLM, build_tokenizer

# Real English prose that every Python installation has: the docstrings of standard-library modules (PSF licence).
_STDLIB_MODULES = [
    "abc", "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "collections", "contextlib", "copy",
    "csv", "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fractions", "functools", "gettext",
    "glob", "heapq", "hmac", "html", "inspect", "io", "json", "locale", "logging", "mailbox", "os", "pathlib",
    "pickle", "pprint", "random", "re", "shlex", "shutil", "socket", "statistics", "string", "subprocess",
    "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "typing", "unittest", "uuid", "warnings",
    "weakref", "zipfile",
]
TINY_VOCAB = 384


def _stdlib_paragraphs() -> list[str]:
    paragraphs = []
    for name in _STDLIB_MODULES:
        doc = importlib.import_module(name).__doc__ or ""
        paragraphs += [" ".join(p.split()) for p in doc.split("\n\n") if len(p.split()) >= 8]
    return paragraphs


@pytest.fixture(scope="session")
def corpus_texts() -> list[str]:
    return _stdlib_paragraphs()


@pytest.fixture(scope="session")
def tiny_tokenizer(corpus_texts):
    return build_tokenizer(corpus_texts, vocab_size=TINY_VOCAB)


@pytest.fixture
def tiny_config(tiny_tokenizer) -> LLaDAConfig:
    V = len(tiny_tokenizer)
    return LLaDAConfig(
        d_model=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=4,
        mlp_hidden_size=128,
        vocab_size=V,
        embedding_size=V,
        max_sequence_length=256,
        mask_token_id=tiny_tokenizer.mask_token_id,
        bos_token_id=tiny_tokenizer.bos_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )


@pytest.fixture
def tiny_model(tiny_config) -> LLaDAModelLM:
    torch.manual_seed(0)
    return LLaDAModelLM(tiny_config).float().eval()


@pytest.fixture
def checkpoint(tmp_path, tiny_model, tiny_tokenizer) -> str:
    """The tiny model and tokenizer saved as a checkpoint folder (what lm-eval and the CLIs load)."""
    path = tmp_path / "tiny-llada"
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return str(path)
