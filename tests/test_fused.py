"""The fused compiled pass (:func:`daskmeans.cpu_kernels.nearest`) against independent references.

Exactness here means: a (row, centre) value is computed by the same instructions
wherever the row and the centre sit, so it is bit-identical whichever block,
place in a 4-row group, byte offset, other rows or other centres come with it.
The references are a float64 NumPy computation (labels, away from near-ties),
``np.add.at``/``np.bincount`` (sums, counts) and the kernel on one centre at a
time (each (row, centre) value alone, then the full call must pick from exactly
those values).
"""

from __future__ import annotations

import numpy as np
import pytest

from daskmeans import cpu_kernels, kernels

pytestmark = pytest.mark.skipif(not cpu_kernels.AVAILABLE, reason="numba is not installed")

S = 1 / 255


def _data(n=37, d=3072, k=7, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        X = rng.integers(0, 256, size=(n, d), dtype=np.uint8)
    else:
        X = rng.uniform(0, 255, size=(n, d)).astype(dtype)
    C = rng.uniform(0.2, 0.8, size=(k, d))
    return X, C


def _near(X, C, rows=None, **kw):
    return kernels.nearest_fused(X, rows, C, S, **kw)


def test_fused_is_chosen_by_shape_dtype_and_namespace_only():
    assert kernels.fused(np, np.zeros((1, 3072), np.uint8), 10, "l2")
    assert kernels.fused(np, np.zeros((0, 3072), np.float32), 10, "l2")
    assert not kernels.fused(np, np.zeros((5000, 108), np.uint8), 400, "l2")  # short rows: BLAS tiles
    assert not kernels.fused(np, np.zeros((5, 3072), np.uint8), 10, "l1")
    assert not kernels.fused(np, np.zeros((5, 3072), np.complex64), 10, "l2")


@pytest.mark.parametrize("d", [128, 131, 3072])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 9])
def test_labels_first_second_match_a_float64_reference(d, k):
    X, C = _data(n=53, d=d, k=k, seed=d + k)
    lab, first, second, sq, _, _ = _near(X, C, second=True, sq=True)
    raw = C / S
    part = (raw * raw).sum(1)[None, :] - 2 * X.astype(np.float64) @ raw.T  # exact to ~1e-16
    srt = np.sort(part, axis=1)
    gap = srt[:, 1] - srt[:, 0] if k > 1 else np.full(len(X), np.inf)
    clear = gap > 1e-3 * np.abs(srt[:, 0]).max()
    assert clear.sum() > len(X) // 2
    np.testing.assert_array_equal(lab[clear], part.argmin(1)[clear])
    np.testing.assert_allclose(first, srt[:, 0], rtol=1e-5, atol=1e-3 * np.abs(srt).max() * 1e-3)
    if k > 1:
        np.testing.assert_allclose(second, srt[:, 1], rtol=1e-5, atol=1e-3 * np.abs(srt).max() * 1e-3)
    else:
        assert np.all(np.isinf(second))
    np.testing.assert_array_equal(sq, (X.astype(np.int64) ** 2).sum(1))  # exact for pixels


def test_each_value_is_the_one_computed_alone_for_every_centre_position():
    """The full call picks from exactly the (row, centre) values of one-centre calls, bit for bit,
    whatever the centres' order (each centre takes every place of the 4-centre blocks)."""
    X, C = _data(n=23, k=6, seed=3)
    alone = np.stack([_near(X, C[j : j + 1])[1] for j in range(len(C))], axis=1)  # (n, k)
    rng = np.random.default_rng(0)
    for _ in range(4):
        order = rng.permutation(len(C))
        lab, first, second = _near(X, C[order], second=True)[:3]
        vals = alone[:, order]
        np.testing.assert_array_equal(first, vals.min(1))
        np.testing.assert_array_equal(lab, vals.argmin(1))  # ties: the lower index, as argmin
        np.testing.assert_array_equal(second, np.sort(vals, axis=1)[:, 1])


def test_a_row_does_not_depend_on_its_place_offset_or_neighbours():
    X, C = _data(n=41, k=5, seed=4)
    _, ref_first, ref_second = _near(X, C, second=True)[:3]
    rng = np.random.default_rng(1)
    # every place in the 4-row groups, and the padded tail: rows in other orders and alone
    for _ in range(3):
        perm = rng.permutation(len(X))
        _, f, s = _near(X, C, perm, second=True)[:3]
        np.testing.assert_array_equal(f, ref_first[perm])
        np.testing.assert_array_equal(s, ref_second[perm])
    for i in (0, 1, 2, 3, 40):
        np.testing.assert_array_equal(_near(X[i : i + 1], C)[1], ref_first[i : i + 1])
    # byte offsets 0-63 of the row in memory (unaligned loads)
    for off in range(0, 64, 7):
        buf = np.empty(X.size + 64, dtype=np.uint8)
        Xo = buf[off : off + X.size].reshape(X.shape)
        Xo[...] = X
        np.testing.assert_array_equal(_near(Xo, C)[1], ref_first)
    # other rows' values never matter: replace the neighbours with extremes
    Y = X.copy()
    Y[::2] = 255
    np.testing.assert_array_equal(_near(Y, C)[1][1::2], ref_first[1::2])


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_sums_and_counts_against_add_at(dtype):
    X, C = _data(n=301, d=200, k=6, seed=5, dtype=dtype)
    lab, _, _, _, sums, counts = _near(X, C, k_sums=len(C))
    ref = np.zeros((len(C), X.shape[1]), dtype=np.float64)
    np.add.at(ref, lab, X.astype(np.float64))
    np.testing.assert_array_equal(counts, np.bincount(lab, minlength=len(C)))
    if dtype == np.uint8:
        assert sums.dtype == np.int32
        np.testing.assert_array_equal(sums, ref)  # exact integers
    else:
        np.testing.assert_allclose(sums, ref, rtol=1e-12)


def test_lloyd_step_inertia_from_exact_totals_matches_the_rows():
    X, C = _data(n=257, k=6, seed=6)
    C = C.astype(np.float32)  # the centres the loop passes (work dtype)
    labels, (sums, counts, inertia, changed) = kernels.lloyd_step(X, C, None, scale=S)
    d = ((X[:, None, :] - C.astype(np.float64)[None] / np.float32(S)) ** 2).sum(-1) * S * S
    np.testing.assert_array_equal(labels, d.argmin(1))
    assert float(inertia) == pytest.approx(d.min(1).sum(), rel=1e-9)
    assert int(changed) == len(X)
    _, (_, _, again, _) = kernels.lloyd_step(X, C, labels, scale=S, sq_total=kernels.sum_sq(X))
    assert float(again) == float(inertia)


@pytest.mark.parametrize("dtype", [np.bool_, np.int16, np.int32, np.float32, np.float64])
def test_other_dtypes_agree_with_the_blas_tiles(dtype):
    rng = np.random.default_rng(7)
    X = (rng.uniform(size=(97, 160)) > 0.5) if dtype == np.bool_ else (rng.uniform(-50, 50, (97, 160))).astype(dtype)
    C = X[:4].astype(np.float64) + 0.25
    assert kernels.fused(np, X, 4, "l2")
    lab, mind = kernels.assign(X, C)
    ref = ((X.astype(np.float64)[:, None, :] - C[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(lab, ref.argmin(1))
    np.testing.assert_allclose(mind, ref.min(1), rtol=1e-4, atol=1e-6 * (X.astype(np.float64) ** 2).sum(1).max())


def test_empty_block():
    X, C = _data(n=0, k=3)
    lab, first, _, _, sums, counts = _near(X, C, k_sums=3)
    assert lab.shape == (0,) and first.shape == (0,)
    assert not sums.any() and not counts.any()


@pytest.mark.parametrize("k", [3, 10, 90])
def test_the_row_tile_changes_no_value(k):
    """Many centres are measured 64 rows at a time (they stay in cache), few 4 rows at a time:
    the same instructions per (row, centre) either way."""
    X, C = _data(n=150, d=130, k=k, seed=9)
    c, cc = kernels.fused_centres(C, X.dtype, S)
    rows = np.arange(len(X), dtype=np.int64)
    out = {}
    for tile in (4, 8, 64):
        lab, first, second = np.zeros(len(X), np.int32), np.empty(len(X)), np.empty(len(X))
        sums, counts = np.zeros((k, X.shape[1]), np.int32), np.zeros(k, np.int64)
        cpu_kernels.nearest(X, rows, c, cc, lab, first, second, sums, counts, np.empty(0), tile)
        out[tile] = (lab, first, second, sums, counts)
    for tile in (8, 64):
        for a, b in zip(out[4], out[tile]):
            np.testing.assert_array_equal(a, b)
