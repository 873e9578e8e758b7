import numpy as np
import pandas as pd
import pytest

from nanogpt.data import imdb as data
from nanogpt.data.imdb import DataValidationError, load_imdb, load_tokenized, validate_reviews
from nanogpt.data.tokens import truncate_ids


@pytest.fixture(scope="module")
def imdb():
    return load_imdb()


def test_bundled_imdb_split(imdb):
    train, val = imdb["train"], imdb["validation"]
    assert set(imdb) == {"train", "validation"}
    # 25,000 IMDB rows, 96 exact duplicate texts dropped, 20% stratified validation share
    assert len(train) + len(val) == 24904
    assert len(val) == round(0.2 * 24904)
    assert set(train["text"]).isdisjoint(val["text"])  # no review leaks into validation
    assert len(set(train["text"])) == len(train)
    for split in (train, val):
        assert abs(np.mean(split["label"]) - 0.5) < 0.002  # stratified: both classes kept at 50/50


def test_split_depends_only_on_split_seed(imdb):
    again = load_imdb(split_seed=data.DEFAULT_SPLIT_SEED)
    assert again["validation"]["text"] == imdb["validation"]["text"]
    other = load_imdb(split_seed=7)
    assert other["validation"]["text"] != imdb["validation"]["text"]


@pytest.mark.parametrize(
    "frame, match",
    [
        (pd.DataFrame({"review": ["good"], "label": [1]}), r"missing column\(s\) \['text'\]"),
        (pd.DataFrame({"text": ["good", "bad", "ok"], "label": [1, 0, 2]}), r"0 or 1, found 2 in rows 2"),
        (pd.DataFrame({"text": ["good", "bad"], "label": ["yes", 0]}), r"found 'yes' in rows 0"),
        (pd.DataFrame({"text": ["good", "  ", "fine"], "label": [1, 0, 1]}), r"empty in rows 1"),
        (pd.DataFrame({"text": ["good", None, 3], "label": [1, 0, 1]}), r"not a string in rows 1, 2"),
        (pd.DataFrame({"text": [], "label": []}), r"no rows"),
    ],
)
def test_validation_names_rows(frame, match):
    with pytest.raises(DataValidationError, match=match):
        validate_reviews(frame, "test.csv")


def test_csv_source(tmp_path):
    rows = [(f"review number {i} was {'great' if i % 2 else 'awful'}", i % 2) for i in range(40)]
    rows.append(rows[0])  # an exact duplicate: dropped before the split
    path = tmp_path / "mine.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    dsd = load_imdb(str(path), val_fraction=0.25)
    assert len(dsd["train"]) + len(dsd["validation"]) == 40
    assert len(dsd["validation"]) == 10
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine film,1\nawful,7\n")
    with pytest.raises(DataValidationError, match=r"rows 1"):
        load_imdb(str(bad))
    with pytest.raises(ValueError, match="Unknown data source"):
        load_imdb("nonsense")


def test_truncation_modes():
    ids = list(range(10))
    assert truncate_ids(ids, 4, "head") == [0, 1, 2, 3]
    assert truncate_ids(ids, 4, "tail") == [6, 7, 8, 9]
    assert truncate_ids(ids, 8, "head_tail", head_fraction=0.25) == [0, 1, 4, 5, 6, 7, 8, 9]
    assert truncate_ids(ids, 20, "head_tail") == ids
    with pytest.raises(ValueError, match="Unknown truncation"):
        truncate_ids(ids, 4, "middle")


@pytest.mark.slow  # tokenizes all 24,904 reviews afresh
def test_tokenized_cache(tmp_path, monkeypatch):
    first = load_tokenized(block_size=96, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    tr = first["train"]
    assert tr.tokens.dtype == np.uint16 and len(tr) == 19923
    assert tr.lengths.max() == 96 and (tr.lengths <= tr.full_lengths).all()
    assert ((tr.full_lengths > 96) == (tr.lengths == 96)).mean() > 0.99
    # A second load must come from the cache: reading the reviews again would fail here.
    monkeypatch.setattr(data, "deduplicated_reviews", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-read")))
    second = load_tokenized(block_size=96, cache_dir=tmp_path)
    np.testing.assert_array_equal(second["train"].tokens, tr.tokens)
    np.testing.assert_array_equal(second["validation"].labels, first["validation"].labels)
    # Another split seed is cut from the same cached corpus, in memory: still no re-read, no second file.
    other = load_tokenized(block_size=96, cache_dir=tmp_path, split_seed=7)
    assert len(list(tmp_path.glob("*.npz"))) == 1 and len(other["train"]) == len(tr)
    assert not np.array_equal(other["validation"].labels, first["validation"].labels)
    # Anything that changes the arrays changes the key: no silent mixing of configurations.
    keys = {data.cache_key("bundled", 96, "head_tail", 0.25), data.cache_key("bundled", 128, "head_tail", 0.25),
            data.cache_key("bundled", 96, "head", 0.25), data.cache_key("bundled", 96, "head_tail", 0.5)}
    assert len(keys) == 4


@pytest.mark.slow  # tokenizes all 24,904 reviews afresh
def test_torn_cache_is_rebuilt(tmp_path):
    first = load_tokenized(block_size=32, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(path.read_bytes()[:1000])  # a crash mid-write from some older tool
    again = load_tokenized(block_size=32, cache_dir=tmp_path)
    np.testing.assert_array_equal(again["train"].tokens, first["train"].tokens)


def test_tokens_match_text(imdb):
    from nanogpt.data.tokenizer import get_tokenizer

    split = load_tokenized(block_size=4096)["validation"]  # long enough that nothing is cut
    enc = get_tokenizer()
    for i in range(0, len(split), 997):
        assert enc.decode(split.ids(i).tolist()) == imdb["validation"]["text"][i]
        assert split.labels[i] == imdb["validation"]["label"][i]


def test_hub_source_path(monkeypatch):
    """The hub loader's own logic (the network itself is mocked): train split, dedupe, and a test split."""
    import datasets

    def fake_load(name, *a, **k):
        assert name == "stanfordnlp/imdb"
        train = datasets.Dataset.from_dict({"text": [f"review {i}" for i in range(50)] + ["review 0"],
                                            "label": [i % 2 for i in range(50)] + [0]})
        test = datasets.Dataset.from_dict({"text": [f"test {i}" for i in range(20)], "label": [i % 2 for i in range(20)]})
        return datasets.DatasetDict({"train": train, "test": test, "unsupervised": test})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    dsd = load_imdb("hub")
    assert set(dsd) == {"train", "validation", "test"}
    assert len(dsd["train"]) + len(dsd["validation"]) == 50 and len(dsd["test"]) == 20


def test_hub_without_network_says_what_to_do(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise OSError("Couldn't reach 'stanfordnlp/imdb' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConnectionError, match="needs a network.*source='bundled'"):
        load_imdb("hub")


def test_bad_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataValidationError, match="empty.csv: the file is empty"):
        load_imdb(str(empty))
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("text,label\ncaf\xe9 was great,1\nawful,0\n".encode("latin-1"))
    with pytest.raises(DataValidationError, match="not valid UTF-8.*re-save the file as UTF-8"):
        load_imdb(str(latin))
    with pytest.raises(FileNotFoundError, match="no such data file"):
        load_imdb(str(tmp_path / "absent.csv"))


def test_huge_review_is_truncated(tmp_path):
    from nanogpt.data.tokens import tokenize_texts

    huge = "a remarkable film " * 300_000  # about 5 MB
    split = tokenize_texts([huge, "short"], [1, 0], block_size=128)
    assert split.lengths.tolist() == [128, 1] and split.full_lengths[0] > 500_000


def _write_rows(path, rows):
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return str(path)


def test_a_text_seen_with_both_labels_is_dropped_entirely(tmp_path):
    rows = [(f"review {i}", i % 2) for i in range(40)] + [("contested", 1), ("contested", 0), ("contested", 1)]
    dsd = load_imdb(_write_rows(tmp_path / "c.csv", rows), val_fraction=0.25)
    texts = list(dsd["train"]["text"]) + list(dsd["validation"]["text"])
    assert "contested" not in texts and len(texts) == 40  # neither label kept, not the majority's
    report = data.dedupe_report(str(tmp_path / "c.csv"))
    assert (report["rows_read"], report["duplicates_dropped"], report["rows_kept"]) == (43, 3, 40)


def test_one_class_left_after_deduplication_is_one_clear_error(tmp_path):
    rows = [(f"good {i}", 1) for i in range(20)] + [("bad", 0), ("bad", 1)]  # the only negative is contested
    with pytest.raises(DataValidationError, match="after deduplication only one class is left"):
        load_imdb(_write_rows(tmp_path / "one.csv", rows))


def test_an_unreadable_csv_is_one_clear_error(tmp_path):
    torn = tmp_path / "torn.csv"
    torn.write_text('text,label\n"an unclosed quote,1\nfine,0\n')
    with pytest.raises(DataValidationError, match="torn.csv: not a readable CSV"):
        load_imdb(str(torn))


def test_labels_are_coerced_from_numeric_text():
    frame = pd.DataFrame({"text": ["good", "bad", "fine"], "label": ["1.0", "0", 1.0]})
    out = validate_reviews(frame, "test.csv")
    assert out["label"].tolist() == [1, 0, 1] and out["label"].dtype == np.int64
    with pytest.raises(DataValidationError, match="found '0.5'"):
        validate_reviews(pd.DataFrame({"text": ["a", "b"], "label": ["0.5", "1"]}), "test.csv")


def test_the_split_keeps_each_class_share(tmp_path):
    rows = [(f"review {i}", int(i % 10 < 3)) for i in range(200)]  # 30% positive
    dsd = load_imdb(_write_rows(tmp_path / "skew.csv", rows), val_fraction=0.2)
    assert len(dsd["validation"]) == 40 and sum(dsd["validation"]["label"]) == 12  # stratified: 30% of 40
    assert sum(dsd["train"]["label"]) == 48
