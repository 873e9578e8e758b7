"""A labelled file of one's own: CSV, TSV, JSON Lines or Parquet, read with pandas (never code from the file).

A source string names the file and, where they are not the defaults, its columns and its positive label, so the
one string that travels through configs, run ids and result rows says everything the data depends on:

    reviews.csv                                   columns text, label
    tickets.parquet?text=body&label=urgent        other column names
    mails.jsonl?label=kind&positive=spam          labels given as two strings, `spam` the positive one

Labels may be 0/1 (also "1", 1.0 or "1.0"), booleans (True/False, "true"/"false"), or any two strings: `pos`/`neg`,
`positive`/`negative`, `yes`/`no` are known; any other two are mapped in sorted order (the first 0, the second 1)
unless `positive=` names the positive one. The mapping is returned, printed by the commands and recorded.
Anything else is one error that says what was found and how to fix it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import pandas as pd

READERS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet",
           ".pq": "parquet"}
KNOWN_POSITIVE = {frozenset({"pos", "neg"}): "pos", frozenset({"positive", "negative"}): "positive",
                  frozenset({"yes", "no"}): "yes", frozenset({"true", "false"}): "true"}
OPTIONS = ("text", "label", "positive")


class DataValidationError(ValueError):
    """Input reviews that cannot be used as they are; the message names the rows and the fix."""


class UserFileError(DataValidationError):
    """A user's file that cannot be read or used as it is; the message says what was found and the fix."""


@dataclass(frozen=True)
class FileSource:
    path: Path
    text: str = "text"  # the column holding the texts
    label: str = "label"  # the column holding the labels
    positive: str | None = None  # the label value that means 1, when labels are two strings

    def options(self) -> dict:
        """The options that differ from the defaults (what the source string carries after '?')."""
        out = {}
        if self.text != "text":
            out["text"] = self.text
        if self.label != "label":
            out["label"] = self.label
        if self.positive is not None:
            out["positive"] = self.positive
        return out

    def spec(self) -> str:
        return str(self.path) + (f"?{urlencode(self.options())}" if self.options() else "")


def parse_source(source: str) -> FileSource:
    """The file and options a source string names (see the module docstring)."""
    source = str(source)
    path, sep, query = source.partition("?")
    if not sep or Path(source).exists():  # a file whose name holds '?' is that file
        return FileSource(Path(source))
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown or any(not v for v in options.values()):
        raise UserFileError(f"{source}: options after '?' must be among text=COLUMN, label=COLUMN, positive=VALUE "
                            f"(non-empty); found {unknown or sorted(k for k, v in options.items() if not v)}.")
    return FileSource(Path(path), options.get("text", "text"), options.get("label", "label"), options.get("positive"))


def file_source(path, text: str = "text", label: str = "label", positive: str | None = None) -> str:
    """The source string of a file with these columns and positive label."""
    return FileSource(Path(path), text, label, positive).spec()


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file. Fix: give a CSV, TSV, JSON Lines or Parquet file with a "
                                "text column and a label column.")
    kind = READERS.get(path.suffix.lower(), "csv" if path.suffix == "" else None)
    if kind is None:
        raise UserFileError(f"{path}: unsupported file type {path.suffix!r}. Fix: save it as CSV, TSV, JSON Lines "
                            "(.jsonl) or Parquet.")
    if path.stat().st_size == 0:
        raise UserFileError(f"{path}: the file is empty. Fix: give a file with a text column and a label column.")
    try:
        if kind in ("csv", "tsv"):
            return pd.read_csv(path, encoding="utf-8", sep="\t" if kind == "tsv" else ",")
        if kind == "jsonl":
            try:
                return pd.read_json(path, lines=True, dtype=False)
            except ValueError:
                return pd.read_json(path, dtype=False)  # one JSON array of records
        return pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise UserFileError(f"{path}: not valid UTF-8 ({exc}). Fix: re-save the file as UTF-8.") from exc
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        what = {"csv": "CSV", "tsv": "TSV", "jsonl": "JSON Lines file", "parquet": "Parquet file"}[kind]
        raise UserFileError(f"{path}: not a readable {what} ({' '.join(str(exc).split())[:200]}).") from exc


def code_labels(values: pd.Series, origin: str, positive: str | None = None) -> tuple[pd.Series, dict]:
    """Labels as 0/1 and the mapping {value as written: 0 or 1} (see the module docstring)."""
    missing = values.isna()
    if missing.any():
        rows = ", ".join(str(i) for i in values.index[missing][:10])
        raise UserFileError(f"{origin}: the label is missing in rows {rows}. Fix: label every row or drop those rows.")
    if values.map(lambda v: isinstance(v, bool)).all():
        return values.astype(int), {"False": 0, "True": 1}
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():  # numbers: 0 and 1 only (a check later names any other value's rows)
        return values, {"0": 0, "1": 1}
    text = values.astype(str).str.strip()
    distinct = sorted(set(text))
    if len(distinct) != 2:
        shown = ", ".join(repr(v) for v in distinct[:6]) + (" ..." if len(distinct) > 6 else "")
        raise UserFileError(f"{origin}: a binary classifier needs labels of exactly two values; found {len(distinct)} "
                            f"({shown}). Fix: keep two classes, or map the labels to 0 and 1.")
    if positive is None:
        positive = KNOWN_POSITIVE.get(frozenset(v.lower() for v in distinct))
        match = [v for v in distinct if positive is not None and v.lower() == positive]
        positive = match[0] if match else distinct[1]
    elif positive not in distinct:
        raise UserFileError(f"{origin}: positive={positive!r} is not one of the labels {distinct}. Fix: name one of "
                            "them.")
    mapping = {v: int(v == positive) for v in distinct}
    return text.map(mapping), mapping


def read_labelled_file(source: str) -> tuple[pd.DataFrame, dict]:
    """(frame with columns text and label, the label mapping) of a file source; the frame is not validated or
    deduplicated yet (data.imdb does that for every source alike)."""
    spec = parse_source(source)
    df = _read_table(spec.path)
    origin = str(spec.path)
    missing = [c for c in (spec.text, spec.label) if c not in df.columns]
    if missing:
        hint = {spec.text: "--text-column", spec.label: "--label-column"}
        raise UserFileError(f"{origin}: no column(s) {missing}; found {list(df.columns)[:20]}. Fix: name them with "
                            + " and ".join(f"{hint[c]} NAME" for c in missing) + ".")
    labels, mapping = code_labels(df[spec.label], origin, spec.positive)
    return pd.DataFrame({"text": df[spec.text], "label": labels}), mapping
