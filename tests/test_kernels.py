"""Per-block kernels on NumPy and on a strict array-API namespace (stand-in for CuPy)."""

from __future__ import annotations

import numpy as np
import pytest

from daskmeans import kernels
from daskmeans.backend import to_numpy

xs = pytest.importorskip("array_api_strict")


@pytest.fixture
def block():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(700, 30), dtype=np.uint8), rng.uniform(size=(5, 30))


def serial_reference(X, C, old=None):
    """Plain NumPy float64: labels, sums, counts, inertia, changed."""
    d = ((X[:, None, :] / 255.0 - C[None]) ** 2).sum(-1)
    lab = d.argmin(1)
    sums = np.zeros_like(C)
    np.add.at(sums, lab, X.astype(np.float64))
    counts = np.bincount(lab, minlength=len(C))
    changed = len(X) if old is None else int((lab != old).sum())
    return lab, sums, counts, d.min(1).sum(), changed


@pytest.mark.parametrize("to_xp", [np.asarray, xs.asarray], ids=["numpy", "array_api_strict"])
def test_lloyd_step_matches_serial_reference(block, to_xp):
    X, C = block
    old = np.arange(len(X)) % 5
    lab, (sums, counts, inertia, changed) = kernels.lloyd_step(to_xp(X), C, to_xp(old.astype(np.int32)), scale=1 / 255)
    r_lab, r_sums, r_counts, r_inertia, r_changed = serial_reference(X, C, old)
    np.testing.assert_array_equal(to_numpy(lab), r_lab)
    np.testing.assert_array_equal(to_numpy(sums), r_sums)  # exact, not approximately
    np.testing.assert_array_equal(to_numpy(counts), r_counts)
    assert float(to_numpy(inertia)) == pytest.approx(r_inertia, rel=1e-5)
    assert int(to_numpy(changed)) == r_changed


@pytest.mark.parametrize("to_xp", [np.asarray, xs.asarray], ids=["numpy", "array_api_strict"])
def test_sums_stay_exact_across_the_float32_limit(to_xp):
    """All-255 rows: one cluster's float32 sum passes 2**24 after 65,793 rows; the
    compiled int64 sums (NumPy) and the per-tile one-hot products (other
    namespaces) must both stay exact."""
    X = np.full((200_001, 1), 255, dtype=np.uint8)
    _, (sums, counts, _, _) = kernels.lloyd_step(to_xp(X), np.ones((1, 1)), None, scale=1 / 255)
    assert float(to_numpy(sums)[0, 0]) == 255 * 200_001 and int(to_numpy(counts)[0]) == 200_001


def test_empty_block(block):
    X, C = block
    lab, (sums, counts, inertia, changed) = kernels.lloyd_step(X[:0], C, None, scale=1 / 255)
    assert lab.shape == (0,) and sums.shape == (5, 30) and not sums.any() and not counts.any()
    assert float(inertia) == 0 and int(changed) == 0


@pytest.mark.parametrize("to_xp", [np.asarray, xs.asarray], ids=["numpy", "array_api_strict"])
def test_l1_distances(block, to_xp):
    X, C = block
    d = to_numpy(kernels.distances(to_xp(X), C, 1 / 255, "l1"))
    ref = np.abs(X[:, None, :] / 255.0 - C[None]).sum(-1)
    np.testing.assert_allclose(d, ref, rtol=1e-5)


@pytest.mark.parametrize("to_xp", [np.asarray, xs.asarray], ids=["numpy", "array_api_strict"])
def test_farthest_and_merge(block, to_xp):
    X, C = block
    d = ((X[:, None, :] / 255.0 - C[None]) ** 2).sum(-1).min(1)
    parts = [kernels.farthest(to_xp(X[s : s + 100]), C, s, 3, scale=1 / 255) for s in range(0, 700, 100)]
    dist, idx, rows, labs = kernels.merge_farthest(3, *parts)
    np.testing.assert_array_equal(to_numpy(idx), np.argsort(-d, kind="stable")[:3])
    np.testing.assert_array_equal(to_numpy(rows), X[to_numpy(idx)])


@pytest.mark.parametrize("to_xp", [np.asarray, xs.asarray], ids=["numpy", "array_api_strict"])
def test_kmeanspp_kernels(block, to_xp):
    X, C = block
    closest, pot = kernels.closest_sq_dist(to_xp(X), C[:1], scale=1 / 255)
    ref = ((X - C[0] * 255) ** 2).sum(-1)  # raw units (pixel values)
    np.testing.assert_allclose(to_numpy(closest), ref, rtol=1e-5)
    targets = np.array([0.0, ref.sum() / 2, ref.sum() * 2])
    local, rows = kernels.locate(to_xp(X), closest, targets)
    expect = np.clip(np.searchsorted(np.cumsum(to_numpy(closest).astype(np.float64)), targets), None, 699)
    np.testing.assert_array_equal(to_numpy(local), expect)
    mins, pots = kernels.candidate_pots(to_xp(X), closest, C[1:3], scale=1 / 255)
    dc = ((X[:, None, :] - 255 * C[None, 1:3]) ** 2).sum(-1)
    np.testing.assert_allclose(to_numpy(pots), np.minimum(dc, ref[:, None]).sum(0), rtol=1e-5)


def test_moments_exact(block):
    X, _ = block
    n, s, ss = kernels.moments(X)
    assert int(n) == 700
    np.testing.assert_array_equal(s, X.astype(np.float64).sum(0))
    np.testing.assert_array_equal(ss, (X.astype(np.float64) ** 2).sum(0))
