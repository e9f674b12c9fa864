"""Small tokenizers with LLaDA's special tokens, for models trained from scratch.

LLaDA-8B ships its own 126k-token tokenizer; the quickstart, the light recipes and the tests train tiny models
and need a tokenizer of a few hundred to a few thousand ids with the same conventions: bos <|startoftext|>,
eos = pad <|endoftext|>, the mask <|mdm_mask|>, <|eot_id|> and LLaDA's chat template (`build_tokenizer`, byte-level
BPE). The small-scale reproduction models characters instead (`build_char_tokenizer`, one id per printable ASCII
character, on text from `ascii_normalize`).
"""

import re
import unicodedata
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, MASK, EOT = "<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>", "<|eot_id|>"
HEADER_START, HEADER_END = "<|start_header_id|>", "<|end_header_id|>"
SPECIAL_TOKENS = [BOS, EOS, MASK, EOT, HEADER_START, HEADER_END]

# LLaDA-8B-Instruct's format: bos, then <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> per message
# (content stripped of surrounding whitespace), then the assistant header. Instruct's own template (its
# tokenizer_config.json, also LLaDA-1.5's) appends that header even without add_generation_prompt, so a finished
# conversation ends in an empty assistant turn; this one appends it only when asked, and renders every prompt
# (add_generation_prompt=True) exactly as Instruct's does. SFT needs this behaviour (training.data.sft_fn).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def build_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer of at most `vocab_size` ids (special tokens first: 0..5) on `texts`;
    a small corpus may yield fewer merges, so size the model by len(tokenizer)."""
    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: byte-level BPE needs 256 byte ids plus "
            f"{len(SPECIAL_TOKENS)} special tokens; use at least {len(SPECIAL_TOKENS) + 256}."
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        mask_token=MASK,
        additional_special_tokens=[EOT, HEADER_START, HEADER_END],
        chat_template=CHAT_TEMPLATE,
    )
    return fast


PRINTABLE_ASCII = "".join(chr(c) for c in range(32, 127))  # space .. "~": 95 characters
_WHITESPACE = re.compile(r"\s+")


def ascii_normalize(text: str) -> str:
    """Text in printable ASCII with single spaces: accents split off and dropped ("café" -> "cafe"), any other
    non-ASCII character dropped, every run of whitespace one space, no leading or trailing space."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _WHITESPACE.sub(" ", ascii_text).strip()


def build_char_tokenizer(alphabet: str = PRINTABLE_ASCII) -> PreTrainedTokenizerFast:
    """One id per character of `alphabet`, after bos / eos (= pad) / mask (ids 0, 1, 2). A character outside the
    alphabet is an error when encoding (normalise the text first, e.g. with ascii_normalize)."""
    if len(set(alphabet)) != len(alphabet):
        raise ValueError(f"alphabet {alphabet!r} repeats a character; give each character once.")
    vocab = {token: i for i, token in enumerate([BOS, EOS, MASK, *alphabet])}
    tokenizer = Tokenizer(models.WordLevel(vocab))  # no unk token: unknown characters raise
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # every character a token
    tokenizer.decoder = decoders.Fuse()  # concatenate, no separator
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                                   mask_token=MASK)
