"""daskmeans sweep: k values, the per-k scores against independent references, the folder, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

from daskmeans import KMeans
from daskmeans.cli import main
from daskmeans.errors import InputError
from daskmeans.outputs import MARKER
from daskmeans.sweep import parse_ks, sweep

DASKMEANS = [sys.executable, "-m", "daskmeans"]


# -- k values ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("2..6", [2, 3, 4, 5, 6]),
    ("2..30:7", [2, 9, 16, 23, 30]),
    ("2..10:4", [2, 6, 10]),
    ("2,4,8", [2, 4, 8]),
    ("8, 2,4,4", [2, 4, 8]),
    ("1,5..7", [1, 5, 6, 7]),
    ("5..5", [5]),
    ("12", [12]),
])
def test_parse_ks(text, expected):
    assert parse_ks(text) == expected


def test_parse_ks_from_python():
    assert parse_ks(range(2, 5)) == [2, 3, 4]
    assert parse_ks([8, 3]) == [3, 8]


@pytest.mark.parametrize("text, message", [
    ("30..2", "-k 30..2: the range 30..2 ends before it starts; write 2..30"),
    ("2..30:0", "-k 2..30:0: step 0 must be 1 or more"),
    ("0..4", "-k 0..4: k=0 must be 1 or more"),
    ("2..x", "-k 2..x: '2..x' is not a whole number or a range; write a list (2,4,8), a range (2..30)"),
    ("2,,4", "-k 2,,4: empty"),
    ("", "-k : empty"),
    ("2-30", "-k 2-30: '2-30' is not a whole number or a range"),
    ("2.5", "'2.5' is not a whole number"),
])
def test_parse_ks_errors_are_one_line(text, message):
    with pytest.raises(InputError) as e:
        parse_ks(text)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("ks", ["30..2", "2..x", "0", "2..9:-1"])
def test_cli_bad_ks_exit_2_one_line(ks, capsys, tmp_path):
    code = main(["sweep", "-k", ks, "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"daskmeans: error: -k {ks}: ") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_cli_init_file_is_refused(capsys, tmp_path):
    code = main(["sweep", "-k", "2..3", "--init", "c.npy", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "a sweep fits several k" in err and err.count("\n") == 1


# -- the sweep on blobs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs_sweep(tmp_path_factory):
    X, y = make_blobs(1200, n_features=6, centers=5, cluster_std=1.2, random_state=7)
    out = tmp_path_factory.mktemp("sweep") / "out"
    result = sweep(da.from_array(X, chunks=250), "2..8", labels=y, random_state=0, silhouette_sample=600, out=out)
    return X, y, result


def test_silhouette_peaks_at_the_true_k(blobs_sweep):
    _, _, result = blobs_sweep
    sil = {r["k"]: r["silhouette"] for r in result["rows"]}
    assert max(sil, key=sil.get) == 5 == result["best"]["silhouette"]
    assert result["best"]["ari"] == 5 and result["best"]["nmi"] == 5
    inertia = [r["inertia"] for r in result["rows"]]
    assert all(b < a for a, b in zip(inertia, inertia[1:]))  # decreasing with k
    # the elbow: most of the drop happens before the true k
    assert (inertia[0] - inertia[3]) > 10 * (inertia[3] - inertia[-1])


def test_scores_agree_with_independent_references(blobs_sweep):
    X, y, result = blobs_sweep
    idx = np.asarray(result["silhouette_rows"])
    assert len(idx) == 600 and len(np.unique(idx)) == 600
    # the same fit again (same seed: same labels), its scores from scikit-learn's functions and by hand
    for row in result["rows"][:3]:
        km = KMeans(row["k"], random_state=0).fit(da.from_array(X, chunks=250))
        labels = km.labels_.compute()
        assert row["inertia"] == pytest.approx(km.inertia_, rel=1e-12)
        assert row["nmi"] == pytest.approx(normalized_mutual_info_score(y, labels), abs=1e-12)
        assert row["ari"] == pytest.approx(adjusted_rand_score(y, labels), abs=1e-12)
        sample_sil = silhouette_score(X[idx], labels[idx])
        assert row["silhouette"] == pytest.approx(sample_sil, abs=1e-12)
        purity = sum(np.bincount(y[labels == j]).max() for j in np.unique(labels)) / len(y)
        assert row["purity"] == pytest.approx(purity, abs=1e-12)


def test_output_folder_contents(blobs_sweep):
    _, _, result = blobs_sweep
    out = Path(result["out"])
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([MARKER, "sweep.json", "sweep.html", "inertia.png", "silhouette.png", "scores.png",
                            "time.png"])
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["ks"] == [2, 3, 4, 5, 6, 7, 8]
    assert [r["k"] for r in saved["rows"]] == saved["ks"]
    assert saved["best"]["silhouette"] == 5 and saved["shared_passes"] is True
    page = (out / "sweep.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<td>5</td>" in page
    assert "http" not in page.replace("http-equiv", "")  # self-contained
    # nothing else (no staging folder) beside it
    assert [p.name for p in out.parent.iterdir()] == ["out"]


def test_without_labels_no_class_scores(tmp_path):
    X, _ = make_blobs(300, n_features=3, centers=3, random_state=0)
    result = sweep(X, [1, 3], random_state=1, silhouette_sample=100, out=tmp_path / "s")
    assert result["rows"][0]["silhouette"] is None  # k = 1: undefined
    assert result["rows"][1]["silhouette"] > 0.5 and "purity" not in result["rows"][1]
    assert not (tmp_path / "s" / "scores.png").exists() and (tmp_path / "s" / "silhouette.png").exists()


def test_failure_leaves_no_folder(tmp_path):
    X = np.zeros((20, 2))
    with pytest.raises(InputError, match="k=30 is larger than the number of rows"):
        sweep(X, "2..30", out=tmp_path / "s")
    assert list(tmp_path.iterdir()) == []


def test_sweep_with_k_means_parallel_init():
    X, y = make_blobs(800, n_features=4, centers=3, random_state=3)
    result = sweep(X, "2,3,4", labels=y, init="k-means||", random_state=0, silhouette_sample=300)
    assert result["best"]["silhouette"] == 3 and result["rows"][1]["ari"] == 1.0


# -- the command line on the real images ----------------------------------------------------------


@pytest.mark.data
def test_cli_end_to_end_on_real_images(cifar_store, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "-k", "2..4", "--data", str(cifar_store), "--subset", "400", "--seed", "1", "--max-iter", "20",
            "--silhouette-sample", "300", "--out", str(out), "--json", "-q"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ks"] == [2, 3, 4] and summary["n_samples"] == 400
    for row in summary["rows"]:
        assert 0 < row["purity"] <= 1 and -1 <= row["silhouette"] <= 1 and row["inertia"] > 0
        assert 0 <= row["nmi"] <= 1 and row["matched_accuracy"] <= row["purity"]
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["class_names"][:2] == ["airplane", "automobile"]
    assert saved["settings"]["subset"] == 400 and saved["data"]["n_samples"] == 400
    assert {"sweep.html", "inertia.png", "silhouette.png", "scores.png"} <= {p.name for p in out.iterdir()}
    # an existing folder is never replaced without --overwrite: one line, exit 2
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "folder exists" in err and err.count("\n") == 1


def test_cli_entry_point_runs():
    r = subprocess.run(DASKMEANS + ["sweep", "-k", "3..2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("daskmeans: error: -k 3..2: the range 3..2 ends before")
