"""The whole job on all 50,000 training images, against scikit-learn (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from daskmeans.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.data]


def test_full_train_run_matches_sklearn(cifar_store, tmp_path):
    from sklearn.cluster import KMeans as SKKMeans
    from sklearn.metrics import adjusted_rand_score

    from daskmeans import kmeans_plusplus
    from daskmeans.data import load_cifar10

    out = tmp_path / "full"
    assert main(["run", "--data", str(cifar_store), "--max-iter", "15", "--seed", "0", "--out", str(out), "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    labels = np.load(out / "labels.npy")
    assert report["n_samples"] == 50000 and labels.shape == (50000,)

    ds = load_cifar10(str(cifar_store), split="train")
    X = ds.flat().compute()
    classes = ds.labels.compute()
    init, _ = kmeans_plusplus(X, 10, random_state=0)  # the draws the run made (same seed; checked against sklearn elsewhere)
    ref = SKKMeans(10, init=init.astype(np.float32), n_init=1, max_iter=15, tol=1e-4, algorithm="lloyd")
    ref.fit(X.astype(np.float32) / np.float32(255))

    # float32 rounding differs (BLAS kernels), so compare the labelings, not bit for bit
    assert adjusted_rand_score(ref.labels_, labels) > 0.99
    table = np.zeros((10, 10), dtype=int)
    np.add.at(table, (labels, classes), 1)
    np.testing.assert_array_equal(np.asarray(report["contingency"]), table)
    ref_table = np.zeros((10, 10), dtype=int)
    np.add.at(ref_table, (ref.labels_, classes), 1)
    assert report["purity"] == pytest.approx(ref_table.max(1).sum() / 50000, abs=0.005)
    assert report["inertia"] == pytest.approx(ref.inertia_, rel=1e-3)
