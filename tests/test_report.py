"""Pictures, report.html, the baseline, --eval-split and --compare sklearn."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from PIL import Image

from daskmeans import report as R
from daskmeans.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ("airplane", "cat", "ship")
COLOURS = {"airplane": (40, 60, 200), "cat": (200, 120, 40), "ship": (60, 200, 90)}


def make_tree(root: Path, n_train=24, n_test=8, noise=12.0, seed=0) -> Path:
    """An image-folder tree (PNG, lossless) of 3 well separated colour classes."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            base = np.array(COLOURS[cls], dtype=np.float64)
            for i in range(n):
                img = np.clip(base + rng.normal(0, noise, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


def png_size(path_or_bytes) -> tuple[int, int]:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    assert data.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def assert_self_contained(page: str):
    assert not re.search(r'(?:src|href)\s*=\s*["\']?\s*(?:https?:)?//', page, flags=re.I)
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", page, flags=re.I)
    assert "<script" not in page.lower()
    imgs = re.findall(r"<img\b[^>]*>", page)
    assert imgs
    for tag in imgs:
        m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', tag)
        assert m, tag[:100]
        png_size(base64.b64decode(m.group(1)))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DASKMEANS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DASKMEANS_DATA", raising=False)


# --------------------------------------------------------------------------- #
# Pure parts
# --------------------------------------------------------------------------- #
def test_select_top_matches_sorting():
    rng = np.random.default_rng(0)
    n, k, m = 500, 7, 4
    keys = rng.integers(0, 20, n).astype(float)  # many ties
    index = rng.permutation(n) + 1000
    clusters = rng.integers(-1, k, n)  # -1: ignored
    pos = R.select_top(keys, index, clusters, k, m)
    expected = []
    for j in range(k):
        members = [i for i in range(n) if clusters[i] == j]
        members.sort(key=lambda i: (keys[i], index[i]))
        expected += members[:m]
    assert pos.tolist() == expected
    assert R.select_top([], [], [], 3, 2).size == 0


def test_priority_is_a_function_of_the_row():
    idx = np.arange(10_000)
    p = R.priority(idx, 0)
    assert np.all((p >= 0) & (p < 1)) and abs(p.mean() - 0.5) < 0.02
    np.testing.assert_array_equal(R.priority(idx[5000:], 0), p[5000:])
    assert not np.array_equal(R.priority(idx, 1), p)


def test_image_grid_places_tiles_and_frames():
    imgs = np.stack([np.full((2, 3, 3), v, np.uint8) for v in (10, 20, 30)])
    g = R.image_grid(imgs, 2, pad=1, borders=[(255, 0, 0), None, (0, 255, 0)], fill=0)
    assert g.shape == (2 * 4, 2 * 5, 3) and g.dtype == np.uint8
    assert (g[1:3, 1:4] == 10).all() and (g[1:3, 6:9] == 20).all() and (g[5:7, 1:4] == 30).all()
    assert tuple(g[0, 0]) == (255, 0, 0) and tuple(g[0, 5]) == (0, 0, 0) and tuple(g[4, 0]) == (0, 255, 0)
    assert (g[4:, 5:] == 0).all()  # the empty slot
    up = R.image_grid(imgs[:1], 1, pad=0, upscale=3)
    assert up.shape == (6, 9, 3) and (up == 10).all()


def test_to_images_from_floats_and_pixels():
    rows = np.linspace(0, 1, 2 * 3072).reshape(2, 3072)
    imgs = R.to_images(rows)
    assert imgs.shape == (2, 32, 32, 3) and imgs.dtype == np.uint8
    assert imgs[0, 0, 0, 0] == 0 and imgs[1, -1, -1, -1] == 255
    px = np.arange(3072, dtype=np.int64) % 256
    np.testing.assert_array_equal(R.to_images(px[None].astype(np.uint8))[0].reshape(-1), px)


# --------------------------------------------------------------------------- #
# Nearest / farthest / random members, distributed vs brute force
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(1)
    n, d, k = 403, 48, 5
    X = rng.integers(0, 256, (n, d), dtype=np.uint8)
    centers = rng.uniform(0.3, 0.7, (k, d))
    dist = ((X[:, None, :] / 255.0 - centers[None]) ** 2).sum(-1)
    labels = dist.argmin(1)
    classes = rng.integers(0, 4, n)
    return X, labels, classes, centers


@pytest.mark.parametrize("chunks", [(403,), (100, 100, 100, 103), (1, 250, 0, 152)])
@pytest.mark.parametrize("metric", ["l2", "l1"])
def test_nearest_and_farthest_are_really_nearest_and_farthest(blobs, chunks, metric):
    X, labels, classes, centers = blobs
    k, m = len(centers), 6
    ex = R.gather_examples(da.from_array(X, chunks=(chunks, -1)), labels, classes, centers, m=m, seed=3, metric=metric)
    diff = X / 255.0 - centers[labels]
    d = (diff**2).sum(1) if metric == "l2" else np.abs(diff).sum(1)
    assert len(ex.index) <= 3 * m * k
    np.testing.assert_array_equal(ex.rows, X[ex.index])  # the rows really are those images
    np.testing.assert_array_equal(ex.cls, classes[ex.index])
    np.testing.assert_allclose(ex.dist, d[ex.index], rtol=1e-12)
    for j in range(k):
        members = np.flatnonzero(labels == j)
        by_dist = members[np.lexsort((members, d[members]))]
        far = members[np.lexsort((members, -d[members]))]
        assert ex.index[ex.pick("nearest", j)].tolist() == by_dist[:m].tolist()
        assert ex.index[ex.pick("farthest", j)].tolist() == far[:m].tolist()
        rnd = ex.index[ex.pick("random", j)]
        assert len(rnd) == min(m, len(members)) and set(rnd) <= set(members)
        prio = R.priority(members, 3)
        assert rnd.tolist() == members[np.argsort(prio, kind="stable")][:m].tolist()


def test_examples_do_not_depend_on_the_chunking(blobs):
    X, labels, classes, centers = blobs
    a = R.gather_examples(da.from_array(X, chunks=(403, -1)), labels, classes, centers, m=4)
    b = R.gather_examples(da.from_array(X, chunks=(37, -1)), da.from_array(labels, chunks=50),
                          da.from_array(classes, chunks=13), centers, m=4, split_every=2)
    for kind in R.KINDS:
        for j in range(len(centers)):
            assert a.index[a.pick(kind, j)].tolist() == b.index[b.pick(kind, j)].tolist()


def test_examples_of_images_and_an_empty_cluster():
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    labels = np.zeros(30, dtype=np.int64)  # cluster 1 is empty
    centers = rng.uniform(size=(2, 3072))
    ex = R.gather_examples(da.from_array(imgs, chunks=(7, 32, 32, 3)), labels, np.zeros(30, int), centers, m=3)
    assert len(ex.pick("nearest", 1)) == 0 and len(ex.pick("nearest", 0)) == 3
    png = R.fig_examples(ex, "farthest", ["a"], [0, -1], [1.0, None], sizes=[30, 0])
    assert png_size(png)[1] > 100
    png_size(R.fig_cluster(ex, 1, centers[1], ["a"], [0, -1], [1.0, None], size=0))


# --------------------------------------------------------------------------- #
# Figures and HTML from a synthetic report
# --------------------------------------------------------------------------- #
def _fake(k=3, C=3, with_eval=True, with_compare=True):
    from daskmeans.metrics import scores
    from daskmeans.predict import heldout_scores

    rng = np.random.default_rng(4)
    table = rng.integers(0, 50, (k, C))
    test = rng.integers(0, 20, (k, C))
    names = ["air<plane>", "cat & dog", "ship"][:C]
    m = scores(table)
    rep = {
        "daskmeans_version": "0.test", "k": k, "n_samples": int(table.sum()), "n_features": 3072,
        "settings": {"data": "x.tar.gz", "k": k, "seed": 0}, "data": {"source": "x.tar.gz", "split": "train"},
        "metrics": m, "purity": m["purity"], "contingency": table, "class_names": names,
        "history": [{"iteration": i, "inertia": 100.0 / i, "changed": 10 - i, "shift": 1.0, "seconds": 0.1}
                    for i in range(1, 8)],
        "n_iter": 7, "converged": True, "inertia": 14.3, "fit_seconds": 1.0, "seconds": 2.0,
        "scheduler": {"kind": "local", "dashboard": "http://127.0.0.1:8787/status"},
    }
    if with_eval:
        rep["eval"] = {"split": "test", "n_samples": int(test.sum()), "contingency": test,
                       "metrics": heldout_scores(test, table)}
    if with_compare:
        sk = {"n_iter": 7, "converged": True, "inertia": 14.3, "seconds": 0.5, "metrics": m}
        rep["compare"] = {"daskmeans": {**sk, "seconds": 0.7}, "sklearn": sk, "agreement_ari": 1.0,
                          "same_labels": 1.0, "max_center_diff": 0.0, "sklearn_version": "1.x", "note": "n"}
    return rep


def test_figures_are_valid_pngs(tmp_path):
    rep = _fake()
    rng = np.random.default_rng(0)
    centers = rng.uniform(size=(3, 3072))
    w, h = png_size(R.fig_centroids(centers, rep["class_names"], [0, 1, 2], [0.5, 0.4, None]))
    assert w > 300 and h > 100
    w, h = png_size(R.fig_contingency(rep["contingency"], rep["class_names"]))
    assert w > 300 and h > 200
    w, h = png_size(R.fig_convergence(rep["history"]))
    assert w > 500 and h > 200
    png_size(R.fig_convergence([]))


def test_html_is_self_contained_and_shows_the_numbers():
    rep = _fake()
    png = R.fig_convergence(rep["history"])
    page = R.html_page(rep, [("Convergence", png, "caption <b>")], per_cluster=[(0, png)],
                       thumbs=[R.thumbnail(np.zeros((32, 32, 3), np.uint8))] * 3)
    assert_self_contained(page)  # the dashboard link is text, not a link
    m = rep["metrics"]
    for key in ("matched_accuracy", "purity", "nmi", "ari"):
        assert f"{m[key]:.4f}" in page
    assert f"{rep['eval']['metrics']['matched_accuracy']:.4f}" in page
    assert "0.229" in page and "0.087" in page and "0.049" in page  # the published baseline
    assert "not bit-identical" in page  # the caveat of the JPEG copy
    assert "air&lt;plane&gt;" in page and "air<plane>" not in page  # escaped
    assert "caption &lt;b&gt;" in page
    assert "scikit-learn" in page and "1.000000" in page


def test_summary_lines_state_the_baseline():
    rep = _fake()
    text = "\n".join(R.summary_lines(rep))
    assert "published raw-pixel k-means" in text and "0.229" in text
    assert "held-out test" in text and "agreement ARI 1.0000" in text


# --------------------------------------------------------------------------- #
# End to end: daskmeans run --eval-split test --compare sklearn
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def easy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("easy")
    tree = make_tree(root / "tree")
    mp = pytest.MonkeyPatch()
    mp.setenv("DASKMEANS_CACHE", str(root / "cache"))
    try:
        out = root / "run"
        code = main(["run", "--data", str(tree), "-k", "3", "--chunk-size", "20", "--eval-split", "test",
                     "--compare", "sklearn", "--out", str(out), "-q"])
    finally:
        mp.undo()
    assert code == 0
    return out


FIGURES = ("centroids.png", "contingency.png", "contingency-test.png", "convergence.png", "samples.png",
           "nearest.png", "farthest.png", "clusters/cluster-00.png", "clusters/cluster-02.png")


def test_run_writes_every_picture_and_the_page(easy_run):
    for name in FIGURES:
        w, h = png_size(easy_run / name)
        assert w >= 300 and h >= 150, name
    page = (easy_run / "report.html").read_text()
    assert_self_contained(page)
    report = json.loads((easy_run / "report.json").read_text())
    for key in ("matched_accuracy", "nmi", "ari"):
        assert f"{report['metrics'][key]:.4f}" in page
        assert f"{report['eval']['metrics'][key]:.4f}" in page
    assert report["baseline"]["matched_accuracy"] == 0.229
    # every figure of the folder is in the page
    assert len(re.findall(r"<img\b", page)) >= len(FIGURES) + 1


def test_easy_case_is_solved_and_agrees_with_sklearn(easy_run):
    report = json.loads((easy_run / "report.json").read_text())
    assert report["metrics"]["ari"] == 1.0 and report["metrics"]["purity"] == 1.0
    assert report["eval"]["split"] == "test" and report["eval"]["n_samples"] == 24
    assert report["eval"]["metrics"]["matched_accuracy"] == 1.0
    cmp_ = report["compare"]
    assert cmp_["agreement_ari"] == 1.0 and cmp_["same_labels"] == 1.0
    assert cmp_["sklearn"]["n_iter"] == report["n_iter"]
    assert cmp_["sklearn"]["metrics"]["ari"] == report["metrics"]["ari"]
    assert cmp_["max_center_diff"] < 1e-6
    assert np.load(easy_run / "labels-test.npy").shape == (24,)


def test_compare_agrees_on_a_harder_case(tmp_path):
    """Overlapping classes: the two implementations still give the same labels from the same start."""
    from daskmeans.run import Settings, run

    tree = make_tree(tmp_path / "tree", n_train=30, n_test=2, noise=90.0, seed=5)
    rep = run(Settings(data=str(tree), k=4, chunk_size=16, compare="sklearn", out=str(tmp_path / "o")))
    assert rep["metrics"]["ari"] < 0.9  # not trivially separable
    assert rep["compare"]["agreement_ari"] == 1.0
    assert rep["compare"]["sklearn"]["n_iter"] == rep["n_iter"]


def test_quiet_and_json_print_only_json(easy_run, tmp_path, capsys):
    tree = easy_run.parent / "tree"
    code = main(["run", "--data", str(tree), "-k", "3", "--eval-split", "test", "--compare", "sklearn",
                 "--out", str(tmp_path / "o"), "-q", "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["eval"]["metrics"]["matched_accuracy"] == 1.0 and doc["compare"]["agreement_ari"] == 1.0


def test_terminal_summary_without_quiet(easy_run, tmp_path, capsys):
    tree = easy_run.parent / "tree"
    code = main(["run", "--data", str(tree), "-k", "3", "--eval-split", "test", "--out", str(tmp_path / "o")])
    out, err = capsys.readouterr()
    assert code == 0
    assert "Iteration 1," in err and "writing figures" in err and "assigned 24 test images" in err
    assert "held-out test (24 images, train mapping)" in out
    assert "published raw-pixel k-means" in out
    assert f"pictures and report: {tmp_path / 'o' / 'report.html'}" in out


def test_a_failing_figure_does_not_lose_the_run(easy_run, tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("no fonts today")

    monkeypatch.setattr(R, "fig_contingency", boom)
    tree = easy_run.parent / "tree"
    code = main(["run", "--data", str(tree), "-k", "3", "--out", str(tmp_path / "o"), "-q"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "could not draw contingency.png (RuntimeError: no fonts today)" in err
    assert (tmp_path / "o" / "report.json").is_file() and (tmp_path / "o" / "centroids.png").is_file()
    assert not (tmp_path / "o" / "contingency.png").exists()
    assert_self_contained((tmp_path / "o" / "report.html").read_text())


@pytest.mark.parametrize("args, needle", [
    (["--compare", "sklearn", "--metric", "l1"], "--compare sklearn needs --metric l2"),
    (["--compare", "torch"], "invalid choice"),
    (["--eval-split", "validation"], "invalid choice"),
])
def test_bad_evaluation_options(easy_run, tmp_path, capsys, args, needle):
    tree = easy_run.parent / "tree"
    try:
        code = main(["run", "--data", str(tree), "-k", "3", "--out", str(tmp_path / "o"), *args])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("daskmeans: error:") and needle in err
    assert not (tmp_path / "o").exists()


def test_eval_split_missing_from_the_source(tmp_path, capsys):
    tree = make_tree(tmp_path / "tree", n_train=4, n_test=1)
    shutil.rmtree(tree / "test")
    code = main(["run", "--data", str(tree), "-k", "2", "--eval-split", "test", "--out", str(tmp_path / "o"), "-q"])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and err.startswith("daskmeans: error:")
    assert "has no test split" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- #
# A real browser (slow; skipped without chromium)
# --------------------------------------------------------------------------- #
@pytest.mark.slow
def test_report_renders_in_headless_chromium(easy_run, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        import check_report
    finally:
        sys.path.pop(0)
    if check_report.find_browser() is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    shot = check_report.screenshot(easy_run / "report.html", tmp_path / "shot.png", 1280, 1600)
    with Image.open(shot) as im:
        assert im.size == (1280, 1600)
        px = np.asarray(im.convert("RGB"))
    assert px.std() > 10  # not a blank page
    assert check_report.main([str(easy_run), "--screenshot", str(tmp_path / "shot2.png")]) == 0


def _check_report_module():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        import check_report
    finally:
        sys.path.pop(0)
    return check_report


def _page_with(png: bytes) -> str:
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return f'<!DOCTYPE html><html><body><img src="{uri}" alt="the figure"></body></html>'


def _broken_png() -> bytes:
    """A PNG with a valid signature and header whose pixel data stops half-way."""
    good = R.thumbnail(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return good[: len(good) // 2]


def test_check_report_finds_an_image_that_does_not_decode():
    check_report = _check_report_module()
    good = R.thumbnail(np.zeros((32, 32, 3), np.uint8))
    assert check_report.static_problems(_page_with(good)) == []
    problems = check_report.static_problems(_page_with(_broken_png()))
    assert len(problems) == 1 and "(the figure): the PNG does not decode" in problems[0], problems
    assert "not a PNG" in check_report.static_problems(_page_with(b"GIF89a"))[0]


@pytest.mark.slow
def test_check_report_fails_on_a_page_with_a_broken_image(easy_run, tmp_path, capsys):
    check_report = _check_report_module()
    if check_report.find_browser() is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    run = tmp_path / "run"
    shutil.copytree(easy_run, run)
    page = (run / "report.html").read_text()
    first = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page).group(1)
    truncated = base64.b64encode(base64.b64decode(first)[:60]).decode("ascii")
    (run / "report.html").write_text(page.replace(first, truncated, 1))
    assert check_report.main([str(run), "--screenshot", str(tmp_path / "shot.png")]) == 1
    out = capsys.readouterr().out
    assert "problem: <img>" in out and "does not decode" in out
    # The browser's own check: an image chromium cannot decode at all is reported by position and alt text.
    bad = tmp_path / "bad.html"
    bad.write_text(_page_with(b"\x89PNG\r\n\x1a\nnot an image"))
    assert check_report.browser_problems(bad) == ["image 1 of 1 (the figure) does not decode in the browser"]
    fine = tmp_path / "fine.html"
    fine.write_text(_page_with(R.thumbnail(np.zeros((32, 32, 3), np.uint8))))
    assert check_report.browser_problems(fine) == []


# --------------------------------------------------------------------------- #
# Figures for a notebook: the same drawing as the PNG files
# --------------------------------------------------------------------------- #
def test_plot_functions_return_figures_that_display_inline_and_match_the_pngs(blobs):
    from matplotlib.figure import Figure

    rep = _fake()
    rng = np.random.default_rng(0)
    centers = rng.uniform(size=(3, 3072))
    table = np.asarray(rep["contingency"])
    s = R.plot_centers(centers, rep["class_names"], table=table)
    assert isinstance(s, Figure)
    png = s._repr_png_()  # what IPython shows for a figure that is the last expression of a cell
    assert png_size(png)[0] > 300
    # the PNG written by a run is this very figure, drawn by the same function
    from daskmeans.metrics import scores

    m = scores(table)
    assert R.fig_centroids(centers, rep["class_names"], m["majority_class"], m["cluster_purity"]) == png
    assert R.fig_contingency(table, rep["class_names"]) == R.to_png(R.plot_contingency(table, rep["class_names"]))
    assert R.fig_convergence(rep["history"]) == R.to_png(R.plot_convergence(rep["history"]))

    class Fitted:  # what plot_centers / plot_convergence read from a fitted KMeans
        cluster_centers_ = centers
        history_ = rep["history"]

    assert R.to_png(R.plot_centers(Fitted())) == R.to_png(R.plot_centers(centers))
    assert R.to_png(R.plot_convergence(Fitted())) == R.fig_convergence(rep["history"])
    X, labels, classes, cents = blobs
    ex = R.gather_examples(da.from_array(X[:, :48], chunks=(100, -1)), labels, classes, cents, m=3)
    fig = R.plot_examples(ex, "farthest", shape=(4, 4, 3))
    assert isinstance(fig, Figure) and png_size(fig._repr_png_())[1] > 100
    with pytest.raises(ValueError, match="kind='middle' is not one of random, nearest, farthest"):
        R.plot_examples(ex, "middle")


def test_dashboard_address_only_where_it_opens_the_dashboard(monkeypatch):
    import importlib.util

    from daskmeans.report import page

    rep = _fake()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bokeh" else real_find_spec(name, *a))
    html_page = R.html_page(rep, [])
    assert "http://127.0.0.1:8787/status" not in html_page
    assert "the dashboard needs bokeh: pip install &#x27;daskmeans[dashboard]&#x27;" in html_page
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "bokeh" else None)
    assert page.dashboard_text(rep["scheduler"]) == "http://127.0.0.1:8787/status"
    assert page.dashboard_text({"kind": "threads", "dashboard": None}) == "-"
