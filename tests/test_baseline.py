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


def test_log_count_ratios_weigh_each_column_by_its_class_evidence():
    import numpy as np
    from scipy import sparse

    # columns: only in positives, only in negatives, in every review
    x = sparse.csr_matrix(np.array([[1, 0, 1], [1, 0, 1], [0, 1, 1], [0, 0, 1]]))
    y = np.array([1, 1, 0, 0])
    scaler = baseline.NBScaler(alpha=1.0).fit(x, y)
    p = np.array([3.0, 1.0, 3.0])  # 1 + counts in positives
    q = np.array([1.0, 2.0, 3.0])
    expected = np.log((p / p.sum()) / (q / q.sum()))
    np.testing.assert_allclose(scaler.r_, expected)
    assert scaler.r_[0] > 0 > scaler.r_[1]  # a positive word weighs up, a negative word down
    np.testing.assert_allclose(scaler.transform(x).toarray(), x.toarray() * expected)


def test_strip_breaks_removes_line_breaks_and_lowers():
    assert baseline.strip_breaks("Great<br /><br />FILM!") == "great  film!"
    vec = baseline.nbsvm_pipeline(tokens="words+marks").named_steps["features"]
    assert "br" not in vec.fit(["a<br />b <br /> c!"]).vocabulary_ and "!" in vec.vocabulary_


def test_nbsvm_chooses_its_tokenization_by_cross_validation_on_training_texts():
    import numpy as np

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(50)]
    # the label is carried by "!" against "?" alone: invisible to the default words, seen by words+marks
    texts = [" ".join(rng.choice(words, 12)) + (" !" if i % 2 else " ?") for i in range(120)]
    labels = [i % 2 for i in range(120)]
    model, choice, scores = baseline.fit_nbsvm(texts, labels)
    assert choice["tokens"] == "words+marks"
    assert set(scores) == {f"{t} C={c:g}" for t in baseline.NBSVM_SETTINGS["tokenizations"]
                           for c in baseline.NBSVM_SETTINGS["C_grid"]}
    assert max(scores, key=scores.get).startswith("words+marks") and scores[f"words+marks C={choice['C']:g}"] == 1.0
    assert all(v < 0.8 for k, v in scores.items() if k.startswith("words C="))  # chance without the marks
    assert (model.predict(["w1 w2 !", "w3 w4 ?"]) == [1, 0]).all()
    with pytest.raises(ValueError, match="Unknown NBSVM tokenization"):
        baseline.nbsvm_pipeline(tokens="chars")


def test_nbsvm_baseline_records_its_choice_and_caches(tmp_path, monkeypatch):
    reviews = load_imdb()["train"].select(range(800)).to_pandas()
    csv = tmp_path / "reviews.csv"
    reviews.to_csv(csv, index=False)
    small = {**baseline.NBSVM_SETTINGS, "C_grid": [0.3, 1.0], "cv_folds": 2}  # 8 fits, not 24: a test's budget
    first = baseline.nbsvm_baseline(str(csv), out_dir=tmp_path / "results", settings=small)
    assert first["accuracy"] > 0.7 and first["n_val"] == 160 and first["settings"] == small
    assert first["C"] in small["C_grid"] and first["tokens"] in small["tokenizations"]
    assert len(first["cv_accuracy"]) == 4
    assert max(first["cv_accuracy"], key=first["cv_accuracy"].get) == f"{first['tokens']} C={first['C']:g}"
    monkeypatch.setattr(baseline, "load_imdb", lambda *a, **k: pytest.fail("recomputed instead of cached"))
    assert baseline.nbsvm_baseline(str(csv), out_dir=tmp_path / "results", settings=small) == first
    with pytest.raises(pytest.fail.Exception, match="recomputed instead of cached"):  # other settings: refitted
        baseline.nbsvm_baseline(str(csv), out_dir=tmp_path / "results", settings={**small, "C_grid": [1.0]})
