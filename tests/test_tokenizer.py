import hashlib
import shutil

import pytest
import tiktoken

from nanogpt.data import tokenizer as tk
from nanogpt.data.imdb import load_imdb

GPT2_URLS = {
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
}


def test_known_ids():
    enc = tk.get_tokenizer()
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert enc.encode_ordinary(" the") == [262]
    assert enc.n_vocab == 50257
    assert enc.eot_token == 50256


@pytest.fixture(scope="module")
def official_gpt2(tmp_path_factory):
    """tiktoken's own get_encoding("gpt2"), fed from its download cache so it needs no network."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    for name, url in GPT2_URLS.items():
        shutil.copy(tk.bpe_files_dir() / name, cache / hashlib.sha1(url.encode()).hexdigest())
    mp = pytest.MonkeyPatch()
    mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    tiktoken.registry.ENCODINGS.pop("gpt2", None)
    try:
        yield tiktoken.get_encoding("gpt2")
    finally:
        tiktoken.registry.ENCODINGS.pop("gpt2", None)
        mp.undo()


def test_same_ids_as_tiktoken_gpt2(official_gpt2):
    ours = tk.get_tokenizer()
    reviews = load_imdb()["validation"]["text"][:300]
    tricky = ["<|endoftext|> is text here", "naïve café 日本語 🎬🍿", "  spaces\n\n\ttabs  ", "it's we'll they've"]
    for text in list(reviews) + tricky:
        ids = ours.encode_ordinary(text)
        assert ids == official_gpt2.encode_ordinary(text)
        assert ours.decode(ids) == text  # byte-level BPE round-trips exactly


def test_encode_batch_matches_single():
    texts = ["A fine film.", "Dreadful, boring and long.", "x" * 50]
    assert tk.encode_batch(texts) == [tk.get_tokenizer().encode_ordinary(t) for t in texts]


def test_altered_file_is_refused(tmp_path):
    for name in ("vocab.bpe", "encoder.json"):
        shutil.copy(tk.bpe_files_dir() / name, tmp_path / name)
    with open(tmp_path / "vocab.bpe", "ab") as f:
        f.write(b"\nextra merge\n")
    with pytest.raises(tk.TokenizerFilesError, match="altered.*vocab.bpe|vocab.bpe.*SHA-256"):
        tk.build_gpt2_encoding(tmp_path)


def test_missing_file_is_refused(tmp_path):
    shutil.copy(tk.bpe_files_dir() / "vocab.bpe", tmp_path / "vocab.bpe")
    with pytest.raises(tk.TokenizerFilesError, match="missing.*encoder.json"):
        tk.build_gpt2_encoding(tmp_path)
