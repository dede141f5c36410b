"""Held-out evaluation (--eval-split) and `daskmeans predict`."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, confusion_matrix, normalized_mutual_info_score

from daskmeans.cli import main
from daskmeans.errors import InputError
from daskmeans.predict import heldout_scores, load_run, mapped_accuracy

CLASSES = ("bird", "cat", "deer", "frog")


def make_tree(root: Path, n_train=30, n_test=12, noise=70.0, seed=7) -> Path:
    """4 overlapping colour classes (PNG): k-means mixes them, so the mapping matters."""
    rng = np.random.default_rng(seed)
    bases = {"bird": (90, 90, 140), "cat": (140, 100, 80), "deer": (120, 130, 90), "frog": (80, 130, 100)}
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.clip(np.array(bases[cls]) + rng.normal(0, noise, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


def run_cli(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DASKMEANS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DASKMEANS_DATA", raising=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A k=5 run on the train split with --eval-split test; the data is then read back."""
    from daskmeans.data import load_cifar10

    root = tmp_path_factory.mktemp("pred")
    tree = make_tree(root / "tree")
    mp = pytest.MonkeyPatch()
    mp.setenv("DASKMEANS_CACHE", str(root / "cache"))
    try:
        out = root / "run"
        assert main(["run", "--data", str(tree), "-k", "5", "--chunk-size", "25", "--seed", "2",
                     "--eval-split", "test", "--out", str(out), "-q"]) == 0
        data = {}
        for split in ("train", "test"):
            ds = load_cifar10(str(tree), split=split, progress=False)
            data[split] = (ds.flat().compute(), ds.labels.compute().astype(np.int64))
    finally:
        mp.undo()
    return out, tree, data


# --------------------------------------------------------------------------- #
# Scores with the training mapping
# --------------------------------------------------------------------------- #
def test_mapped_accuracy_and_heldout_scores():
    train = np.array([[10, 2, 0], [1, 8, 3], [0, 0, 0], [4, 4, 9]])  # cluster 2 empty in training
    test = np.array([[3, 1, 0], [2, 2, 2], [5, 0, 1], [0, 1, 4]])
    s = heldout_scores(test, train)
    assert s["train_majority_class"] == [0, 1, -1, 2]
    assert s["purity"] == pytest.approx((3 + 2 + 0 + 4) / test.sum())  # cluster 2 maps to nothing
    r, c = linear_sum_assignment(train[[0, 1, 3]], maximize=True)
    match = {[0, 1, 3][i]: j for i, j in zip(r, c)}
    assert s["matched_accuracy"] == pytest.approx(sum(test[i, j] for i, j in match.items()) / test.sum())
    assert s["purity_refit"] == pytest.approx(test.max(axis=1).sum() / test.sum())
    assert mapped_accuracy(np.zeros((2, 2), int), [0, 1]) is None
    with pytest.raises(ValueError):
        heldout_scores(test, train[:2])


# --------------------------------------------------------------------------- #
# predict reproduces training; held-out metrics recomputed independently
# --------------------------------------------------------------------------- #
def test_predict_reproduces_the_training_labels(trained, tmp_path, capsys):
    run, tree, _ = trained
    code, out, err = run_cli(capsys, "predict", run, "--data", tree, "--split", "train", "--chunk-size", "17",
                             "--out", tmp_path / "p", "-q")
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "p" / "labels.npy"), np.load(run / "labels.npy"))
    rep = json.loads((tmp_path / "p" / "report.json").read_text())
    assert rep["contingency"] == json.loads((run / "report.json").read_text())["contingency"]
    assert (tmp_path / "p" / "contingency.png").read_bytes()[:4] == b"\x89PNG"


def test_heldout_metrics_equal_an_independent_recomputation(trained, tmp_path, capsys):
    run, tree, data = trained
    centres = np.load(run / "centroids.npy").astype(np.float64)
    (Xtr, ytr), (Xte, yte) = data["train"], data["test"]
    k = len(centres)

    def nearest(X):
        d = ((X[:, None, :] / 255.0 - centres[None]) ** 2).sum(-1)
        return d.argmin(1)

    train_pred, test_pred = nearest(Xtr), nearest(Xte)
    np.testing.assert_array_equal(train_pred, np.load(run / "labels.npy"))
    np.testing.assert_array_equal(test_pred, np.load(run / "labels-test.npy"))
    # mapping learned on train, independently: majority and Hungarian matching
    conf = confusion_matrix(train_pred, ytr, labels=range(max(k, 4)))[:k, :4]
    majority = {j: int(conf[j].argmax()) for j in range(k) if conf[j].sum()}
    nonempty = [j for j in range(k) if conf[j].sum()]
    r, c = linear_sum_assignment(-conf[nonempty])
    matching = {nonempty[i]: int(j) for i, j in zip(r, c)}
    expected = {
        "purity": np.mean([majority.get(int(p), -1) == t for p, t in zip(test_pred, yte)]),
        "matched_accuracy": np.mean([matching.get(int(p), -1) == t for p, t in zip(test_pred, yte)]),
        "nmi": normalized_mutual_info_score(yte, test_pred),
        "ari": adjusted_rand_score(yte, test_pred),
    }
    assert 0.2 < expected["matched_accuracy"] < 0.95  # a case where the mapping matters
    from_run = json.loads((run / "report.json").read_text())["eval"]["metrics"]
    code, out, err = run_cli(capsys, "predict", run, "--data", tree, "--json", "-q")
    assert code == 0, err
    from_predict = json.loads(out)["metrics"]
    for key, value in expected.items():
        assert from_run[key] == pytest.approx(value, abs=1e-12), key
        assert from_predict[key] == pytest.approx(value, abs=1e-12), key


def test_predict_summary_and_a_bare_centroids_file(trained, tmp_path, capsys):
    run, tree, _ = trained
    code, out, err = run_cli(capsys, "predict", run, "--data", tree)
    assert code == 0
    assert "train mapping" in out and "train class" in out and "assigned 48 test images" in err
    code, out, err = run_cli(capsys, "predict", run / "centroids.npy", "--data", tree, "--split", "test")
    assert code == 0 and "own mapping" in out


def test_predict_finds_the_runs_own_data(trained, capsys):
    run, tree, _ = trained
    code, out, err = run_cli(capsys, "predict", run, "--json", "-q")  # data from report.json
    assert code == 0, err
    assert json.loads(out)["n_samples"] == 48


# --------------------------------------------------------------------------- #
# Bad input: one line with the fix, exit status 2, no traceback
# --------------------------------------------------------------------------- #
def _bad_runs(tmp: Path, run: Path) -> dict:
    cases = {}
    empty = tmp / "empty-run"
    empty.mkdir()
    (empty / "report.json").write_text("{}")
    cases["no centroids.npy"] = (empty, "no centroids.npy in this folder")
    cases["missing"] = (tmp / "nope", "no such folder or file")
    wrong = tmp / "wrong.npy"
    np.save(wrong, np.zeros((5, 100), np.float32))
    cases["wrong shape"] = (wrong, "shape (5, 100), expected (k, 3072)")
    nan = tmp / "nan.npy"
    np.save(nan, np.full((5, 3072), np.nan, np.float32))
    cases["nan"] = (nan, "NaN or infinite")
    obj = tmp / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases["pickled object"] = (obj, "not a readable .npy array")
    junk = tmp / "junk.npy"
    junk.write_bytes(pickle.dumps([1, 2]))
    cases["not npy"] = (junk, "not a readable .npy array")
    mixed = tmp / "mixed"
    mixed.mkdir()
    np.save(mixed / "centroids.npy", np.zeros((3, 3072), np.float32))
    (mixed / "report.json").write_text((run / "report.json").read_text())
    cases["k mismatch"] = (mixed, "report.json says k=5 but centroids.npy has 3")
    badjson = tmp / "badjson"
    badjson.mkdir()
    np.save(badjson / "centroids.npy", np.zeros((3, 3072), np.float32))
    (badjson / "report.json").write_text("{not json")
    cases["bad report"] = (badjson, "not readable JSON")
    return cases


@pytest.mark.parametrize("case", ["no centroids.npy", "missing", "wrong shape", "nan", "pickled object", "not npy",
                                  "k mismatch", "bad report"])
def test_bad_runs_give_one_line(trained, tmp_path, capsys, case):
    run, tree, _ = trained
    path, needle = _bad_runs(tmp_path, run)[case]
    code, out, err = run_cli(capsys, "predict", path, "--data", tree, "--out", tmp_path / "o")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("daskmeans: error:") and needle in err, err
    assert "Traceback" not in err and not (tmp_path / "o").exists()
    with pytest.raises(InputError):
        load_run(path)


@pytest.mark.parametrize("args, needle", [
    (["--split", "valid"], "invalid choice"),
    (["--subset", "0"], "--subset 0"),
    (["--scheduler", "nowhere"], "--scheduler"),
    (["--data", "/nonexistent/cifar.tar.gz"], "nonexistent"),
])
def test_bad_predict_options(trained, tmp_path, capsys, args, needle):
    run, tree, _ = trained
    argv = ["predict", run, *(["--data", tree] if "--data" not in args else []), *args, "-q"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and needle in err, err


def test_predict_refuses_an_existing_out(trained, tmp_path, capsys):
    run, tree, _ = trained
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "x").write_text("keep")
    code, out, err = run_cli(capsys, "predict", run, "--data", tree, "--out", tmp_path / "o")
    assert code == 2 and "not empty" in err
    assert (tmp_path / "o" / "x").read_text() == "keep"


@pytest.mark.data
def test_predict_on_real_data(cifar_store, tmp_path, capsys):
    """A small real run; predict on the test split agrees with --eval-split."""
    out = tmp_path / "run"
    assert main(["run", "--data", str(cifar_store), "--subset", "500", "-k", "10", "--max-iter", "10",
                 "--eval-split", "test", "--out", str(out), "-q"]) == 0
    code, stdout, err = run_cli(capsys, "predict", out, "--data", cifar_store, "--out", tmp_path / "p", "-q")
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "p" / "labels.npy"), np.load(out / "labels-test.npy"))
    a = json.loads((out / "report.json").read_text())["eval"]["metrics"]
    b = json.loads((tmp_path / "p" / "report.json").read_text())["metrics"]
    assert a == b
