"""daskmeans.features against direct NumPy computations."""

from __future__ import annotations

import json
import pickle

import dask
import dask.array as da
import numpy as np
import pytest

from daskmeans import features
from daskmeans.cli import main
from daskmeans.errors import InputError
from daskmeans.features.patches import (
    PatchFeaturizer,
    encode_images,
    fit_zca,
    grid_pool,
    neighbour_mean,
    normalise,
    patch_rows,
    pool_edges,
    quadrant_pool,
    sample_patches,
    triangle,
    unit,
)


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads"):
        yield


def _images(n=40, seed=0, hw=12):
    return np.random.default_rng(seed).integers(0, 256, size=(n, hw, hw, 3), dtype=np.uint8)


# -- PCA ----------------------------------------------------------------------------------------


def _correlated(n=300, d=20, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d)) * np.linspace(3, 0.1, d)
    return rng.standard_normal((n, d)) @ A + 5.0


@pytest.mark.parametrize("n", [300, 15])  # the covariance route (n > d) and the rows' SVD (n <= d)
def test_pca_matches_numpy_svd(n):
    X = _correlated(n=n)
    f = features.fit_pca(da.from_array(X, chunks=(70, -1)), dim=6, whiten=False)
    Xc = X - X.mean(axis=0)
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    np.testing.assert_allclose(f.mean_, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(f.explained_variance_, s[:6] ** 2 / (len(X) - 1), rtol=1e-10)
    # components up to sign
    dots = np.abs(np.sum(f.components_ * Vt[:6], axis=1))
    np.testing.assert_allclose(dots, 1.0, atol=1e-10)
    # projection: the same as NumPy's, up to the same signs
    signs = np.sign(np.sum(f.components_ * Vt[:6], axis=1))
    Z = f.transform(da.from_array(X, chunks=(70, -1))).compute()
    assert Z.dtype == np.float32 and Z.shape == (n, 6)
    np.testing.assert_allclose(Z, (Xc @ Vt[:6].T) * signs, rtol=1e-4, atol=1e-4)
    assert f.info["explained_variance_ratio"] == pytest.approx((s[:6] ** 2).sum() / (s ** 2).sum())


def test_pca_whitened_output_has_identity_covariance():
    X = _correlated(seed=1)
    f = features.fit_pca(X, dim=8)
    Z = f.transform(X).compute().astype(np.float64)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(np.cov(Z, rowvar=False), np.eye(8), atol=1e-4)


def test_pca_of_uint8_pixels_is_in_unit_scale_and_chunking_invariant():
    imgs = _images(60, hw=6)  # 108 pixels
    flat = imgs.reshape(60, -1)
    ref = features.fit_pca(flat.astype(np.float64) / 255, dim=5)
    outs = []
    for chunks in (60, 7, 25):
        f = features.fit_pca(da.from_array(imgs, chunks=(chunks, -1, -1, -1)), dim=5)
        np.testing.assert_allclose(f.explained_variance_, ref.explained_variance_, rtol=1e-5)
        outs.append(f.transform(da.from_array(flat, chunks=(chunks, -1))).compute())
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-5, atol=1e-5)


def test_pca_dim_too_large_is_one_clear_error():
    with pytest.raises(InputError, match="--pca-dim"):
        features.fit_pca(_correlated(n=10, d=4), dim=20)


# -- patches: each step against a direct computation ------------------------------------------------


def test_normalise_and_zca_against_direct_formulas():
    rng = np.random.default_rng(0)
    P = rng.uniform(0, 255, size=(500, 27))
    N = normalise(P)
    direct = (P - P.mean(1, keepdims=True)) / np.sqrt(P.var(1, ddof=1, keepdims=True) + 10)
    np.testing.assert_allclose(N, direct, rtol=1e-4, atol=1e-4)
    mean, W = fit_zca(N)
    C = np.cov(N.astype(np.float64), rowvar=False)
    D, V = np.linalg.eigh(C)
    np.testing.assert_allclose(W, V @ np.diag(1 / np.sqrt(D + 0.1)) @ V.T, atol=1e-8)
    np.testing.assert_allclose(W, W.T, atol=1e-12)  # ZCA: symmetric
    Z = (N - mean) @ W
    Cz = np.cov(Z, rowvar=False)  # whitened: covariance D / (D + eps) in the eigenbasis
    np.testing.assert_allclose(V.T @ Cz @ V, np.diag(D / (D + 0.1)), atol=1e-6)


def test_patch_rows_and_triangle_and_pooling_on_a_tiny_image():
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 1, size=(2, 7, 7, 3)).astype(np.float32)
    rows, R, C = patch_rows(img, 3, 2)
    assert (R, C) == (3, 3)
    centers = rng.standard_normal((4, 27)).astype(np.float32)
    # a direct loop over images, positions and centres
    expect = np.zeros((2, 16))
    for b in range(2):
        acts = np.zeros((R, C, 4))
        for i in range(R):
            for j in range(C):
                x = img[b, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :].reshape(-1)
                np.testing.assert_array_equal(rows[b * 9 + i * 3 + j], x)
                z = np.sqrt(((x[None, :].astype(np.float64) - centers) ** 2).sum(1))
                acts[i, j] = np.maximum(z.mean() - z, 0)
        # quadrants of a 3 x 3 grid: first half = rows/cols 0..1 (MATLAB's round(3/2) = 2)
        expect[b] = np.concatenate([acts[:2, :2].sum((0, 1)), acts[:2, 2:].sum((0, 1)),
                                    acts[2:, :2].sum((0, 1)), acts[2:, 2:].sum((0, 1))])
    f = triangle(rows, centers)
    got = quadrant_pool(f.reshape(2, R * C, 4), R, C)
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-4)


def test_patch_featurizer_transform_equals_the_steps_by_hand():
    imgs = _images(10, hw=10)
    rng = np.random.default_rng(2)
    zm, zw = rng.standard_normal(48), np.eye(48) + 0.01 * rng.standard_normal((48, 48))
    centers = rng.standard_normal((5, 48)).astype(np.float32)
    fm, fs = rng.standard_normal(20).astype(np.float32), rng.uniform(0.5, 2, 20).astype(np.float32)
    f = PatchFeaturizer({"size": 4, "stride": 3, "n_centers": 5, "image_shape": [10, 10, 3]},
                        {"zca_mean": zm, "zca_w": zw, "centers": centers, "feat_mean": fm, "feat_scale": fs})
    got = f.transform(da.from_array(imgs, chunks=(3, -1, -1, -1))).compute()
    rows, R, C = patch_rows(imgs.astype(np.float64), 4, 3)
    x = (rows - rows.mean(1, keepdims=True)) / np.sqrt(rows.var(1, ddof=1, keepdims=True) + 10)
    x = (x - zm) @ zw
    z = np.sqrt(((x[:, None, :] - centers[None].astype(np.float64)) ** 2).sum(-1))
    a = np.maximum(z.mean(1, keepdims=True) - z, 0).reshape(10, R, C, 5)
    h = (R + 1) // 2
    pooled = np.concatenate([a[:, :h, :h].sum((1, 2)), a[:, :h, h:].sum((1, 2)), a[:, h:, :h].sum((1, 2)),
                             a[:, h:, h:].sum((1, 2))], axis=1)
    assert got.dtype == np.float32 and got.shape == (10, 20)
    np.testing.assert_allclose(got, (pooled - fm) * fs, rtol=1e-3, atol=1e-3)


def test_sampled_patches_do_not_depend_on_chunking():
    imgs = _images(30, hw=8)
    a = sample_patches(da.from_array(imgs, chunks=(30, -1, -1, -1)), 200, 3, seed=5)
    b = sample_patches(da.from_array(imgs, chunks=(4, -1, -1, -1)), 200, 3, seed=5)
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(5)
    i, r, c = rng.integers(0, 30, 200), rng.integers(0, 6, 200), rng.integers(0, 6, 200)
    np.testing.assert_array_equal(a[17], imgs[i[17], r[17]:r[17] + 3, c[17]:c[17] + 3].reshape(-1))


@pytest.fixture(scope="module")
def small_patch_fit():
    imgs = _images(48, seed=3, hw=12)
    with dask.config.set(scheduler="threads"):
        return imgs, features.fit("patches", da.from_array(imgs, chunks=(16, -1, -1, -1)), size=4, stride=2,
                                  n_centers=6, n_patches=600, seed=0, max_iter=10, pool=2, reduce_dim=0,
                                  flip=False, unit_rows=False)


def test_patch_features_are_standardised_and_chunking_invariant(small_patch_fit):
    imgs, f = small_patch_fit
    assert f.n_features == 24
    outs = [f.transform(da.from_array(imgs, chunks=(c, -1, -1, -1))).compute() for c in (48, 5, 16)]
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-5, atol=1e-5)
    raw = f.encode(imgs, standardise=False).compute().astype(np.float64)
    expect = (raw - raw.mean(0)) / np.sqrt(raw.var(0) + 0.01)  # Coates et al.'s standardisation
    np.testing.assert_allclose(outs[0], expect, rtol=1e-4, atol=1e-4)
    # flat rows (HWC order) of the same images give the same features
    np.testing.assert_allclose(f.transform(imgs.reshape(48, -1)).compute(), outs[0], atol=1e-5)


def test_grid_pool_against_a_direct_loop():
    assert pool_edges(13, 2) == [0, 7, 13]  # quadrants: the first half has ceil(n / 2) positions
    assert pool_edges(14, 3) == [0, 5, 9, 14] and pool_edges(7, 3) == [0, 2, 5, 7]
    rng = np.random.default_rng(4)
    F = rng.uniform(0, 1, size=(2, 7 * 6, 3))
    cells_r, cells_c = [(0, 2), (2, 5), (5, 7)], [(0, 2), (2, 4), (4, 6)]  # pool_edges(6, 3) = [0, 2, 4, 6]
    expect = np.zeros((2, 27))
    for b in range(2):
        A = F[b].reshape(7, 6, 3)
        cells = [A[r0:r1, c0:c1].sum((0, 1)) for r0, r1 in cells_r for c0, c1 in cells_c]
        expect[b] = np.concatenate(cells)
    np.testing.assert_allclose(grid_pool(F, 7, 6, 3), expect, rtol=1e-12)
    np.testing.assert_allclose(grid_pool(F, 7, 6, 1), F.sum(1), rtol=1e-12)


@pytest.fixture(scope="module")
def reduced_patch_fit():
    imgs = _images(80, seed=6, hw=12)
    with dask.config.set(scheduler="threads"):
        feat, F = features.fit_transform("patches", da.from_array(imgs, chunks=(25, -1, -1, -1)), size=4,
                                         stride=2, n_centers=6, n_patches=600, seed=0, max_iter=10, pool=3,
                                         reduce_dim=5, flip=False, unit_rows=False, neighbours=0)
        return imgs, feat, F.compute()


def test_reduced_patch_features_are_the_whitened_pca_of_numpy_svd(reduced_patch_fit):
    imgs, f, F = reduced_patch_fit
    assert f.n_features == 5 and f.pooled_features == 54 and F.shape == (80, 5) and F.dtype == np.float32
    assert features.n_features("patches", f.options) == 5
    assert features.n_features("patches", {**f.options, "reduce_dim": 0}) == 54
    # the standardised 3 x 3-pooled features (54 = 9 cells x 6 centres), then NumPy's SVD of them
    S = f.encode(imgs, standardise=True).compute().astype(np.float64)
    assert S.shape == (80, 54)
    mean = S.mean(axis=0)
    _, sv, Vt = np.linalg.svd(S - mean, full_matrices=False)
    Z = (S - mean) @ Vt[:5].T / (sv[:5] / np.sqrt(80 - 1))  # whitened: unit variance per component
    signs = np.sign(np.sum(Z * F, axis=0))  # each axis up to its sign
    np.testing.assert_allclose(F, Z * signs, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.cov(F, rowvar=False), np.eye(5), atol=1e-3)
    # transform = the training fit applied to other images (the test split): the same mean and axes
    other = _images(7, seed=9, hw=12)
    So = f.encode(other, standardise=True).compute().astype(np.float64)
    np.testing.assert_allclose(f.transform(da.from_array(other, chunks=(3, -1, -1, -1))).compute(),
                               (So - mean) @ Vt[:5].T / (sv[:5] / np.sqrt(79)) * signs, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(f.transform(imgs).compute(), F, rtol=1e-5, atol=1e-5)


def test_featurizers_pickle_and_save(tmp_path, small_patch_fit, reduced_patch_fit):
    imgs, fp = small_patch_fit
    fpca = features.fit_pca(imgs.reshape(48, -1), dim=4)
    for f in (fp, reduced_patch_fit[1], fpca, features.Featurizer()):
        g = pickle.loads(pickle.dumps(f))
        assert g == f
        f.save(tmp_path / "f.npz")
        h = features.load(tmp_path / "f.npz")
        assert h == f and h.describe()["kind"] == f.kind
        if f.kind != "raw":
            np.testing.assert_array_equal(h.transform(imgs).compute(), f.transform(imgs).compute())


def test_unit_rows_and_neighbour_mean_against_a_brute_force_sort(monkeypatch):
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(200, 5)).astype(np.float32)
    block = rng.normal(size=(37, 5)).astype(np.float32)
    d = ((block[:, None, :].astype(np.float64) - rows[None]) ** 2).sum(-1)
    order = np.argsort(d, axis=1)
    for m in (1, 7, 199, 200):
        if m < 200:  # the m-th and (m+1)-th nearest are well apart: float32 scores cannot swap them
            gap = np.take_along_axis(d, order[:, m:m + 1], 1) - np.take_along_axis(d, order[:, m - 1:m], 1)
            assert gap.min() > 1e-4
        got = neighbour_mean(block, rows, m, unit_rows=False, sub=8)
        np.testing.assert_allclose(got, rows[order[:, :m]].mean(1), rtol=1e-5, atol=1e-6)
    u = neighbour_mean(block, rows, 7, unit_rows=True)
    np.testing.assert_allclose(u, unit(neighbour_mean(block, rows, 7, unit_rows=False)), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(neighbour_mean(rows, rows, 1, unit_rows=False), rows)  # its own nearest
    # the score buffer is bounded: with room for 250 scores (1 row of 200), the same neighbours
    from daskmeans.features import patches

    monkeypatch.setattr(patches, "NEIGHBOUR_SCORES", 250)
    np.testing.assert_allclose(neighbour_mean(block, rows, 7, unit_rows=False), rows[order[:, :7]].mean(1),
                               rtol=1e-5, atol=1e-6)
    z = unit(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(z, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-7)  # a zero row stays zero, no NaN
    assert z.dtype == np.float32


def test_flip_averages_each_image_with_its_mirror():
    imgs = _images(20, seed=2, hw=12)
    f = features.fit("patches", imgs, size=4, n_centers=6, n_patches=600, max_iter=5, pool=3, reduce_dim=0,
                     flip=True, unit_rows=False)
    assert f.options["flip"] is True and f.options["neighbours"] == 0
    plain = PatchFeaturizer({**f.options, "flip": False}, f.arrays)
    a = plain.encode(imgs, standardise=False).compute().astype(np.float64)
    b = plain.encode(imgs[:, :, ::-1], standardise=False).compute()
    np.testing.assert_allclose(f.encode(imgs, standardise=False).compute(), (a + b) / 2, rtol=1e-5, atol=1e-5)
    # by construction the mirror images get the same features
    np.testing.assert_allclose(f.transform(imgs[:, :, ::-1]).compute(), f.transform(imgs).compute(),
                               rtol=1e-4, atol=1e-4)
    assert not np.allclose(plain.transform(imgs[:, :, ::-1]).compute(), plain.transform(imgs).compute(), atol=1e-2)
    # a featurizer saved before the option existed (no "flip" key) reads as flip=False
    old = PatchFeaturizer({k: v for k, v in f.options.items() if k not in ("flip", "unit_rows", "neighbours")},
                          f.arrays)
    np.testing.assert_array_equal(old.transform(imgs).compute(), plain.transform(imgs).compute())
    direct = encode_images(imgs, zca_mean=f.arrays["zca_mean"], zca_w=f.arrays["zca_w"], centers=f.arrays["centers"],
                           size=4, stride=2, to255=1.0, pool=3, flip=True, sub=7)
    np.testing.assert_allclose(direct, (a + b) / 2, rtol=1e-5, atol=1e-5)


def test_mirrored_images_get_the_same_features_through_the_whole_pipeline():
    # CIFAR-10's shape and the default steps (unit rows, neighbour diffusion)
    imgs = np.random.default_rng(1).integers(0, 256, (120, 32, 32, 3), dtype=np.uint8)
    f = features.fit("patches", imgs, n_centers=16, n_patches=3000, max_iter=5, reduce_dim=5, neighbours=7)
    np.testing.assert_allclose(f.transform(imgs[:, :, ::-1]).compute(), f.transform(imgs).compute(), atol=1e-5)
    # an asymmetric patch grid too (12 px, 4 px patches, stride 3: positions 0, 3, 6; the mirror's 2, 5, 8):
    # an image and its mirror average the same two encodings
    small = _images(20, seed=2, hw=12)
    g = features.fit("patches", small, size=4, stride=3, n_centers=6, n_patches=600, max_iter=5, pool=3,
                     reduce_dim=0, unit_rows=False)
    np.testing.assert_allclose(g.transform(small[:, :, ::-1]).compute(), g.transform(small).compute(),
                               rtol=1e-5, atol=1e-5)
    plain = PatchFeaturizer({**g.options, "flip": False}, g.arrays)
    assert not np.allclose(plain.transform(small[:, :, ::-1]).compute(), plain.transform(small).compute(), atol=1e-2)


@pytest.mark.parametrize("steps", [1, 3])
def test_neighbour_averaged_features_are_the_transform_of_the_training_images(tmp_path, steps):
    imgs = _images(60, seed=4, hw=12)
    feat, F = features.fit_transform("patches", da.from_array(imgs, chunks=(25, -1, -1, -1)), size=4, n_centers=6,
                                     n_patches=600, max_iter=5, reduce_dim=4, neighbours=5, neighbour_steps=steps)
    F = F.compute()
    assert F.shape == (60, 4) and feat.n_features == 4 and feat.arrays["neighbour_rows"].shape == (60, 4)
    assert ("neighbour_values" in feat.arrays) == (steps > 1)
    np.testing.assert_allclose(np.linalg.norm(F, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(feat.transform(imgs).compute(), F, atol=1e-5)
    # by hand: the unit reduced rows U; each row's 5 nearest of them; H_s = unit(mean of H_{s-1} over them)
    plain = PatchFeaturizer({**feat.options, "unit_rows": False, "neighbours": 0},
                            {k: v for k, v in feat.arrays.items() if not k.startswith("neighbour_")})
    R = plain.transform(imgs).compute().astype(np.float64)
    U = R / np.linalg.norm(R, axis=1, keepdims=True)
    np.testing.assert_allclose(feat.arrays["neighbour_rows"], U, atol=1e-5)

    def nearest(A):
        d = ((A[:, None, :] - U[None]) ** 2).sum(-1)
        order = np.argsort(d, axis=1)
        gap = np.take_along_axis(d, order[:, 5:6], 1) - np.take_along_axis(d, order[:, 4:5], 1)
        assert gap.min() > 1e-4  # no near-tie at the 5th neighbour: float32 cannot pick another set
        return order[:, :5]

    def step(H, idx):
        M = H[idx].mean(1)
        return M / np.linalg.norm(M, axis=1, keepdims=True)

    idx = nearest(U)
    H = U
    for _ in range(steps - 1):
        H = step(H, idx)
    np.testing.assert_allclose(F, step(H, idx), atol=1e-4)
    other = _images(9, seed=8, hw=12)
    O = plain.transform(other).compute().astype(np.float64)
    O /= np.linalg.norm(O, axis=1, keepdims=True)
    np.testing.assert_allclose(feat.transform(da.from_array(other, chunks=(4, -1, -1, -1))).compute(),
                               step(H, nearest(O)), atol=1e-4)
    feat.save(tmp_path / "f.npz")
    np.testing.assert_array_equal(features.load(tmp_path / "f.npz").transform(other).compute(),
                                  feat.transform(other).compute())


def test_neighbours_default_follows_the_reduction():
    imgs = _images(30, seed=5, hw=12)
    f = features.fit("patches", imgs, size=4, n_centers=6, n_patches=300, max_iter=3, reduce_dim=3)
    assert f.options["neighbours"] == 30 and f.options["flip"] and f.options["unit_rows"]  # min(50, images)
    assert f.options["neighbour_steps"] == 5 and f.arrays["neighbour_values"].shape == (30, 3)
    f = features.fit("patches", imgs, size=4, n_centers=6, n_patches=300, max_iter=3, reduce_dim=0)
    assert f.options["neighbours"] == 0 and "neighbour_rows" not in f.arrays


def test_bad_feature_kind_and_options():
    with pytest.raises(InputError, match="neighbours=5 averages reduced rows, but reduce_dim=0"):
        features.fit("patches", _images(40), size=4, n_centers=6, n_patches=100, reduce_dim=0, neighbours=5)
    with pytest.raises(InputError, match="neighbours=41 is more than the 40 training images"):
        features.fit("patches", _images(40), size=4, n_centers=6, n_patches=100, reduce_dim=3, neighbours=41)
    for bad in (-1, 2.5, True):
        with pytest.raises(InputError, match="must be a whole number >= 0"):
            features.fit("patches", _images(40), size=4, n_centers=6, n_patches=100, reduce_dim=3, neighbours=bad)
    for bad in (0, 1.5, None):
        with pytest.raises(InputError, match=r"neighbour_steps=.* must be a whole number >= 1"):
            features.fit("patches", _images(40), size=4, n_centers=6, n_patches=100, reduce_dim=3,
                         neighbour_steps=bad)
    with pytest.raises(InputError, match="not one of raw, pca, patches"):
        features.fit("sift", _images())
    with pytest.raises(InputError, match="no option"):
        features.fit("pca", _images(), n_centers=4)
    with pytest.raises(InputError, match=r"reduce_dim=40 must be between 0 \(off\) and .* = 39"):
        features.fit("patches", _images(40), size=4, n_centers=6, n_patches=100, reduce_dim=40)
    with pytest.raises(InputError, match="pooling grid 0"):
        features.fit("patches", _images(40), size=4, n_centers=6, n_patches=100, pool=0)
    with pytest.raises(InputError, match="pooling grid 6 must be between 1 and the 5 patch positions"):
        features.fit("patches", _images(40), size=4, stride=2, n_centers=6, n_patches=100, pool=6)  # 12 px: 5 x 5


# -- the command line -------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, msg", [
    (["--features", "pca", "--init", "c.npy"], "--init c.npy holds pixel centres"),
    (["--features", "patches", "--algorithm", "hamerly"], "hamerly needs raw uint8 pixels"),
    (["--features", "patches", "--compare", "sklearn"], "leave out --compare"),
    (["--features", "patches", "--dictionary-size", "50", "--patch-samples", "10"], "--patch-samples 50 or more"),
    (["--features", "pca", "--pca-dim", "0"], "--pca-dim 0: the number of components must be between 1"),
    (["--features", "patches", "--reduce-dim", "0", "--neighbours", "5"], "pass --reduce-dim 30 or --neighbours 0"),
    (["--features", "patches", "--neighbours", "-1"], "--neighbours -1"),
    (["--features", "patches", "--neighbour-steps", "0"], "--neighbour-steps 0"),
    (["--features", "patches", "--neighbours", "0", "--neighbour-steps", "3"], "pass --neighbours 50 or drop"),
    (["--features", "patches", "--reduce-dim", "0", "--neighbour-steps", "3"], "but there are none"),
])
def test_cli_refuses_what_features_cannot_do(argv, msg, tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_cli_features_pca_end_to_end_and_predict(cifar_store, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--data", str(cifar_store), "--subset", "300", "--features", "pca", "--pca-dim", "12",
                 "-k", "4", "--eval-split", "test", "--out", str(out), "-q", "--json"]) == 0
    capsys.readouterr()
    rep = json.loads((out / "report.json").read_text())
    assert rep["features"]["kind"] == "pca" and rep["n_features"] == 12 and rep["settings"]["pca_dim"] == 12
    assert rep["settings"]["features"] == "pca" and rep["algorithm"] == "lloyd"
    assert np.load(out / "centroids.npy").shape == (4, 12)
    means = np.load(out / "cluster-means.npy")
    assert means.shape == (4, 3072) and 0 <= means.min() and means.max() <= 1
    assert (out / "featurizer.npz").is_file() and (out / "centroids.png").is_file()
    # the labels are the nearest saved centres to the saved featurizer's transform
    from daskmeans import load_cifar10

    ds = load_cifar10(str(cifar_store), split="train").subset(300, 0)
    f = features.load(out / "featurizer.npz")
    assert features.fit("pca", ds.images, dim=12) == f  # refitted here: the same featurizer
    Z = f.transform(ds.images).compute().astype(np.float64)
    C = np.load(out / "centroids.npy").astype(np.float64)
    np.testing.assert_array_equal(np.argmin(((Z[:, None, :] - C[None]) ** 2).sum(-1), axis=1),
                                  np.load(out / "labels.npy"))
    # predict applies the training featurizer: the same test labels and scores as --eval-split
    assert main(["predict", str(out), "--split", "test", "--out", str(tmp_path / "pred"), "-q", "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    np.testing.assert_array_equal(np.load(tmp_path / "pred" / "labels.npy"), np.load(out / "labels-test.npy"))
    assert pred["metrics"]["purity"] == pytest.approx(rep["eval"]["metrics"]["purity"])


def test_cli_features_patches_end_to_end_and_predict(cifar_store, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--data", str(cifar_store), "--subset", "200", "--features", "patches", "--dictionary-size",
                 "8", "--patch-samples", "2000", "--reduce-dim", "6", "--neighbours", "9", "-k", "3",
                 "--eval-split", "test", "--out", str(out), "-q", "--json"]) == 0
    capsys.readouterr()
    rep = json.loads((out / "report.json").read_text())
    opts = rep["features"]["options"]
    assert (opts["flip"], opts["unit_rows"], opts["neighbours"], rep["n_features"]) == (True, True, 9, 6)
    f = features.load(out / "featurizer.npz")
    assert f.arrays["neighbour_rows"].shape == f.arrays["neighbour_values"].shape == (200, 6)
    from daskmeans import load_cifar10

    ds = load_cifar10(str(cifar_store), split="train").subset(200, 0)
    Z = f.transform(ds.images).compute().astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1, rtol=1e-5)
    C = np.load(out / "centroids.npy").astype(np.float64)
    np.testing.assert_array_equal(np.argmin(((Z[:, None, :] - C[None]) ** 2).sum(-1), axis=1),
                                  np.load(out / "labels.npy"))
    assert main(["predict", str(out), "--split", "test", "--out", str(tmp_path / "pred"), "-q", "--json"]) == 0
    capsys.readouterr()
    np.testing.assert_array_equal(np.load(tmp_path / "pred" / "labels.npy"), np.load(out / "labels-test.npy"))
