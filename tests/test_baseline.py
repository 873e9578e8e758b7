import pytest

from nanogpt.data.imdb import load_imdb
from nanogpt.study import baseline


def test_tfidf_baseline_learns_and_caches(tmp_path, monkeypatch):
    reviews = load_imdb()["train"].select(range(1500)).to_pandas()
    csv = tmp_path / "reviews.csv"
    reviews.to_csv(csv, index=False)
    first = baseline.tfidf_baseline(str(csv), out_dir=tmp_path / "results")
    assert first["n_train"] + first["n_val"] == 1500 and first["n_val"] == 300
    assert first["accuracy"] > 0.75 and first["roc_auc"] > 0.85  # far above chance on 1,200 reviews
    assert list((tmp_path / "results").glob("baseline-tfidf-*.json"))
    monkeypatch.setattr(baseline, "load_imdb", lambda *a, **k: pytest.fail("recomputed instead of cached"))
    assert baseline.tfidf_baseline(str(csv), out_dir=tmp_path / "results") == first
