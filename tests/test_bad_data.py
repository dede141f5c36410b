"""Hostile and mistaken data inputs (the data layer): each ends with one line, exit 2,
bounded memory and time; no crafted pickle runs code; no forged archive is served.

The reproductions of the issue are here verbatim (a zero-stride ``ndarray``, a batch
claiming 1e9 or 20,000 rows, a 9-byte memo-index pickle, a 1.5 MB archive of six
250 MB zero members, ``--data /dev/zero``, a forged 708-byte cached archive, a config
that blanks the md5), each with its neighbours.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import socket
import struct
import subprocess
import sys
import tarfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import dask
import numpy as np
import pytest
from PIL import Image

from daskmeans.data import fetch as fetch_mod, ingest, load_cifar10, resolve_source, safety
from daskmeans.errors import DataError
from test_data import (  # the official-layout builders and the isolated environment
    CLASSES,
    assert_cache_clean,
    assert_one_line,
    data_env,  # noqa: F401 - autouse fixture: cache and HOME in tmp_path, no downloads
    make_image_tree,
    make_official_tar,
    official_blobs,
    tar_tree,
    write_tar,
)

MiB = 2**20


def refused(fn, *args, match=None, **kw) -> str:
    """Call ``fn``; it must raise DataError with a one-line message; return the message."""
    with pytest.raises(DataError, match=match) as err:
        fn(*args, **kw)
    return assert_one_line(err)


def peak_bytes(fn) -> int:
    """Peak Python-traced allocation while ``fn()`` runs (it may raise DataError)."""
    tracemalloc.start()
    try:
        try:
            fn()
        except DataError:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def official_tar_with(tmp_path: Path, name: str = "c.tar.gz", **replace: bytes) -> Path:
    """An official-layout archive whose members ``replace`` maps to crafted bytes."""
    blobs, _ = official_blobs()
    blobs.update(replace)
    return write_tar(tmp_path / name, {f"cifar-10-batches-py/{k}": v for k, v in blobs.items()})


# --- crafted pickles ----------------------------------------------------------------------

P2 = b"\x80\x02"


def _s(text: str) -> bytes:
    """SHORT_BINUNICODE."""
    b = text.encode()
    return b"\x8c" + bytes([len(b)]) + b


def _bytes(b: bytes) -> bytes:
    """BINBYTES."""
    return b"B" + struct.pack("<I", len(b)) + b


def _int(i: int) -> bytes:
    """BININT."""
    return b"J" + struct.pack("<i", i)


def _glob(mod: str, name: str) -> bytes:
    return b"c" + mod.encode() + b"\n" + name.encode() + b"\n"


def _dtype_u1() -> bytes:
    # numpy.dtype("u1", False, True) then BUILD (3, "|", None, None, None, -1, -1, 0)
    return (_glob("numpy", "dtype") + _s("u1") + b"\x89\x88\x87R"
            + b"(" + b"K\x03" + _s("|") + b"NNN" + _int(-1) + _int(-1) + b"K\x00" + b"tb")


def _array(shape: tuple, raw: bytes, dtype: bytes | None = None) -> bytes:
    """``_reconstruct(ndarray, (0,), b"b")`` then BUILD (1, shape, dtype, False, raw)."""
    shp = b"(" + b"".join(_int(s) if s < 2**31 else b"\x8a\x08" + struct.pack("<q", s) for s in shape) + b"t"
    return (_glob("numpy.core.multiarray", "_reconstruct") + _glob("numpy", "ndarray")
            + b"K\x00\x85" + _bytes(b"b") + b"\x87R"
            + b"(K\x01" + shp + (dtype or _dtype_u1()) + b"\x89" + _bytes(raw) + b"tb")


def _batch(data: bytes, labels: bytes = b"]") -> bytes:
    """{b"data": <data>, b"labels": <labels>} as a protocol-2 pickle."""
    return P2 + b"}(" + _bytes(b"data") + data + _bytes(b"labels") + labels + b"u."


def test_builders_make_a_real_batch():
    # The crafted-pickle builders produce what NumPy itself writes: a sane batch loads.
    rows = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    got = safety.safe_loads(_batch(_array((2, 3072), rows.tobytes()), b"](K\x01K\x02e"), "x")
    np.testing.assert_array_equal(got[b"data"], rows)
    assert got[b"labels"] == [1, 2]


ZERO_STRIDES = (  # the exploit: ndarray((1e9, 3072), uint8, buffer, 0, (0, 0)) via REDUCE
    P2 + _glob("numpy", "ndarray")
    + b"(" + b"(" + _int(10**9) + _int(3072) + b"t" + _dtype_u1() + _bytes(b"x") + b"K\x00" + b"(K\x00K\x00t" + b"t"
    + b"R."
)


@pytest.mark.parametrize(
    "payload, match",
    [
        pytest.param(ZERO_STRIDES, "numpy.ndarray called directly", id="ndarray-zero-strides"),
        pytest.param(_batch(_array((10**9, 3072), b"x" * 8)), "shape|bytes", id="1e9-rows-few-bytes"),
        pytest.param(_batch(_array((10, 3072), b"x" * 3072)), "holds 3072 bytes", id="10-rows-1-row-of-bytes"),
        pytest.param(_batch(_array((2**62, 2**62), b"")), "shape", id="overflowing-shape"),
        pytest.param(_batch(_array((-1, 3072), b"")), "shape", id="negative-shape"),
        pytest.param(_batch(_array((1, 1, 3072), b"x" * 3072)), "shape", id="three-dims"),
        pytest.param(_batch(_array((20_000, 3072), b"")), "shape", id="20000-rows"),
        pytest.param(  # an object-dtype array would unpickle arbitrary objects as its items
            _batch(_array((1,), b"", dtype=_glob("numpy", "dtype") + _s("O") + b"\x89\x88\x87R")), "dtype",
            id="object-dtype"),
        pytest.param(  # a dtype whose state claims fields / a huge element size
            _batch(_array((1, 3072), b"x" * 3072, dtype=_glob("numpy", "dtype") + _s("u1") + b"\x89\x88\x87R"
                          + b"(K\x03" + _s("|") + b"NNN" + _int(10**6) + _int(1) + b"K\x00tb")), "dtype",
            id="dtype-state"),
        pytest.param(  # _reconstruct with a non-ndarray class or a non-empty shape
            _batch(_glob("numpy._core.multiarray", "_reconstruct") + _glob("numpy", "dtype") + b"K\x00\x85"
                   + _bytes(b"b") + b"\x87R"), "_reconstruct", id="reconstruct-other-class"),
        pytest.param(  # BUILD on an ndarray placeholder twice (state replaced after the size check)
            _batch(_array((1, 3072), b"x" * 3072) + b"(K\x01(J\x00\x00\x01\x00K\x0ct" + _dtype_u1()
                   + b"\x89" + _bytes(b"") + b"tb"), "twice", id="array-state-twice"),
        pytest.param(P2 + b"]r\xff\xff\xff\x7f.", "memo index", id="9-byte-memo-index"),
        pytest.param(P2 + b"]q\x05.", "memo index", id="memo-index-skips"),
        pytest.param(P2 + b"]q\x00h\x07.", "never stored", id="memo-get-unset"),
        pytest.param(P2 + b"j\xff\xff\xff\x7f.", "never stored", id="long-get-unset"),
        pytest.param(P2 + b"B\xff\xff\xff\x7fxx.", "unreadable pickle", id="binbytes-claims-2GiB"),
        pytest.param(P2 + b"X\xff\xff\xff\x7fxx.", "unreadable pickle", id="binunicode-claims-2GiB"),
        pytest.param(b"\x80\x04\x8d" + struct.pack("<Q", 2**40) + b"x.", "opcode BINUNICODE8|unicodestring8", id="binunicode8"),
        pytest.param(b"\x80\x04\x96" + struct.pack("<Q", 2**40) + b"x.", "opcode BYTEARRAY8|bytearray8", id="bytearray8"),
        pytest.param(P2 + b"\x8b" + struct.pack("<i", 10**8) + b"x.", "opcode LONG4|long4", id="long4"),
        pytest.param(P2 + b"\x8a\x09" + b"\x00" * 8 + b"\x01.", "too large", id="long1-9-bytes"),
        pytest.param(P2 + b"\x82\x01.", "opcode EXT1", id="ext1"),
        pytest.param(P2 + b"(" + _glob("os", "system") + b"o.", "opcode|os.system", id="obj"),
        pytest.param(P2 + b"(ios\nsystem\n" + _s("touch x") + b".", "opcode INST", id="inst"),
        pytest.param(P2 + b"Pabc\n.", "opcode PERSID", id="persid"),
        pytest.param(P2 + b"]" + b"(" * 10 + b".", "unreadable pickle|no STOP|MARK", id="marks-no-stop"),
        pytest.param(P2 + b"]", "no STOP|unreadable", id="no-stop"),
        pytest.param(P2 + b"].junk", "bytes after the end", id="trailing-bytes"),
        pytest.param(P2 + b"]" * 6 + b"a" * 5 + b".", "deeper", id="deep-nesting"),
        pytest.param(P2 + _glob("numpy", "ndarray") + b".", "unexpected", id="bare-ndarray-class"),
        pytest.param(P2 + _glob("_codecs", "encode") + _s("eJwDAAAAAAE=") + _s("base64") + b"\x86R.", "encode",
                     id="codecs-base64"),
        pytest.param(P2 + _glob("builtins", "eval") + _s("1") + b"\x85R.", "builtins.eval", id="eval"),
        pytest.param(P2 + _glob("numpy", "load") + b".", "numpy.load", id="numpy-load"),
        pytest.param(  # protocol 4: the global's name comes from the stack, seen only by find_class
            b"\x80\x04" + _s("posix") + _s("system") + b"\x93" + _s("true") + b"\x85R.", "posix.system",
            id="stack-global"),
        pytest.param(b"", "no STOP|unreadable", id="empty"),
    ],
)
def test_crafted_pickles_refused(payload, match):
    msg = refused(safety.safe_loads, payload, "data_batch_1", match=match)
    assert msg.startswith(("data_batch_1: ", "refusing to unpickle"))
    assert "not a CIFAR-10 batch" in msg


def test_huge_claims_cost_no_memory():
    # The issue: 347 bytes claiming 1e9 rows asked for 2.79 TiB; a 9-byte memo pickle took 256 MiB.
    for payload in (ZERO_STRIDES, _batch(_array((10**9, 3072), b"x" * 8)), P2 + b"]r\xff\xff\xff\x7f."):
        assert len(payload) < 400
        assert peak_bytes(lambda: safety.safe_loads(payload, "x")) < 2 * MiB


def test_crafted_pickles_run_nothing(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.chdir(tmp_path)
    payloads = [
        pickle.dumps({b"data": _Evil(f"touch {marker}")}, protocol=p) for p in (0, 2, 4, 5)
    ] + [
        P2 + _glob("subprocess", "call") + b"(" + _s("sh") + _s("-c") + _s(f"touch {marker}") + b"l\x85R.",
        P2 + _glob("builtins", "open") + _s(str(marker)) + _s("w") + b"\x86R.",
        b"\x80\x04" + _s("builtins") + _s("open") + b"\x93" + _s(str(marker)) + _s("w") + b"\x86R.",
        P2 + _glob("numpy", "save") + _s(str(marker)) + b"K\x01\x86R.",
    ]
    for payload in payloads:
        with pytest.raises(DataError):
            safety.safe_loads(payload, "x")
    assert not marker.exists()


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


# --- official archives that lie about their batches ----------------------------------------


def _meta(rows=20, names=CLASSES, vis=3072) -> bytes:
    return pickle.dumps(
        {b"num_cases_per_batch": rows, b"label_names": [c.encode() for c in names], b"num_vis": vis}, protocol=2
    )


def _official_batch(rows: int, labels=None, data=None) -> bytes:
    data = np.zeros((rows, 3072), np.uint8) if data is None else data
    labels = [i % 10 for i in range(rows)] if labels is None else labels
    return pickle.dumps({b"data": data, b"labels": labels, b"batch_label": b"x"}, protocol=2)


@pytest.mark.parametrize(
    "replace, match",
    [
        pytest.param({"data_batch_3": _official_batch(40)}, "40 rows, but batches.meta says 20",
                     id="more-rows-than-meta"),
        pytest.param({"test_batch": _official_batch(19)}, "19 rows", id="fewer-rows-than-meta"),
        pytest.param({"batches.meta": _meta(rows=20_000)}, "num_cases_per_batch 20000", id="meta-20000-rows"),
        pytest.param({"batches.meta": _meta(rows=0)}, "num_cases_per_batch 0", id="meta-0-rows"),
        pytest.param({"batches.meta": _meta(rows="20")}, "num_cases_per_batch", id="meta-rows-str"),
        pytest.param({"batches.meta": _meta(vis=1024)}, "num_vis 1024", id="meta-num-vis"),
        pytest.param({"batches.meta": _meta(names=())}, "0 label_names", id="no-classes"),
        pytest.param({"data_batch_2": _official_batch(20, labels=list(range(19)))}, "19 for 20 images",
                     id="labels-short"),
        pytest.param({"data_batch_2": _official_batch(20, labels=["cat"] * 20)}, "labels", id="labels-str"),
        pytest.param({"data_batch_2": _official_batch(20, labels=np.zeros(20, np.int64))}, "labels",
                     id="labels-array"),
        pytest.param({"data_batch_2": _official_batch(20, labels=[10] * 20)}, "outside 0..9", id="labels-range"),
        pytest.param({"data_batch_2": _official_batch(20, data=np.zeros((20, 3072), np.int64))},
                     r"shape \(20, 3072\), dtype int64", id="wrong-dtype-names-shape-and-dtype"),
        pytest.param({"data_batch_2": _official_batch(20, data=np.zeros((20, 32, 32, 3), np.uint8))},
                     "shape", id="hwc-array"),
        pytest.param({"data_batch_2": pickle.dumps({b"data": b"x" * 3072, b"labels": [0]}, protocol=2)},
                     "it has a bytes", id="data-bytes"),
    ],
)
def test_lying_official_archives(tmp_path, data_env, replace, match):
    tgz = official_tar_with(tmp_path, **replace)
    msg = refused(load_cifar10, tgz, progress=False, match=match)
    assert "not a CIFAR-10" in msg or "labels" in msg
    assert_cache_clean(data_env)


def test_twenty_thousand_rows_per_batch_not_accepted(tmp_path, data_env):
    # The issue: meta and batches agreeing on 20,000 rows gave 100,000 forged images, exit 0.
    blobs = {"batches.meta": _meta(rows=20_000)}
    blobs.update({n: _official_batch(20_000) for n in ("data_batch_1",)})
    tgz = official_tar_with(tmp_path, **blobs)
    refused(load_cifar10, tgz, progress=False, match="num_cases_per_batch 20000")
    with pytest.raises(DataError, match="not a CIFAR batch"):
        safety.safe_loads(blobs["data_batch_1"], "data_batch_1")
    assert_cache_clean(data_env)


def test_official_archive_still_reads(tmp_path, data_env):
    # The exact official layout (Python 2 pickles, bytes keys) passes every new check.
    tgz, batches = make_official_tar(tmp_path, py2=True)
    ds = load_cifar10(tgz, progress=False)
    assert ds.n_samples == 100
    np.testing.assert_array_equal(ds.labels.compute(), np.concatenate([batches[f"data_batch_{i}"][b"labels"]
                                                                       for i in range(1, 6)]))


# --- archives that expand too much ----------------------------------------------------------


def _zero_bomb(path: Path, names, member_bytes=250 * MiB) -> Path:
    """A gzip'd tar of zero-filled members, built from gzip members of 1 MiB of zeros each:
    six 250 MB members make ~1.5 MB, without compressing 1.5 GB here."""
    zeros = gzip.compress(b"\0" * MiB, compresslevel=9)
    with open(path, "wb") as f:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = member_bytes
            f.write(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
            for _ in range(member_bytes // MiB):
                f.write(zeros)
        f.write(gzip.compress(b"\0" * 1024))
    return path


@pytest.mark.parametrize(
    "names",
    [
        pytest.param([f"images/train/cat/{i}.png" for i in range(6)], id="images"),
        pytest.param([f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 7)], id="batches"),
        pytest.param([f"junk/{i}.bin" for i in range(6)], id="skipped-members"),
    ],
)
def test_zero_bomb_refused_fast_and_small(tmp_path, data_env, names):
    bomb = _zero_bomb(tmp_path / "bomb.tar.gz", names)
    assert bomb.stat().st_size < 2 * MiB
    t0 = time.monotonic()
    peak = peak_bytes(lambda: load_cifar10(bomb, progress=False))
    took = time.monotonic() - t0
    msg = refused(load_cifar10, bomb, progress=False, match="decompression bomb|implausibly large")
    assert str(bomb) in msg
    assert took < 10 and peak < 64 * MiB, (took, peak)
    assert_cache_clean(data_env)


def test_oversized_image_member_refused(tmp_path, data_env):
    # Under the ratio floor, but no 32x32 image is 2 MiB.
    tgz = write_tar(tmp_path / "t.tar.gz", {"train/cat/a.png": os.urandom(2 * MiB)})
    refused(load_cifar10, tgz, progress=False, match="implausibly large for what it is")
    assert_cache_clean(data_env)


def test_total_read_bounded(tmp_path, data_env, monkeypatch):
    from daskmeans.data import safety as s

    monkeypatch.setattr(s, "MAX_READ_BYTES", 4096)
    root = tmp_path / "tree"
    make_image_tree(root)
    tgz = tar_tree(root, tmp_path / "t.tar.gz")
    refused(load_cifar10, tgz, progress=False, match="more than 4,096 bytes")


# --- zip archives -----------------------------------------------------------------------------


def _zip_tree(src: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, f"images/{p.relative_to(src).as_posix()}")
    return out


def test_zip_image_tree_reads_like_the_folder(tmp_path):
    root = tmp_path / "tree"
    expected = make_image_tree(root)
    z = _zip_tree(root, tmp_path / "images.zip")
    for split in ("train", "test"):
        ds = load_cifar10(z, split=split, progress=False)
        np.testing.assert_array_equal(ds.images.compute(), expected[split][0])
        np.testing.assert_array_equal(ds.labels.compute(), expected[split][1])


def _zip_with(path: Path, name: str, data: bytes = b"x", mode: int | None = None, flag: int = 0,
              compress=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compress) as zf:
        info = zipfile.ZipInfo(name)
        info.compress_type = compress
        if mode is not None:
            info.external_attr = mode << 16
        zf.writestr(info, data)
    if flag:  # mark as encrypted in the central directory
        raw = bytearray(path.read_bytes())
        at = raw.rfind(b"PK\x01\x02")
        raw[at + 8] |= flag
        path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize(
    "kw, match",
    [
        pytest.param(dict(name="/etc/x.png"), "absolute name", id="absolute"),
        pytest.param(dict(name="train/../../x.png"), "'..'", id="dotdot"),
        pytest.param(dict(name="train/cat/a.png", data=b"/etc/passwd", mode=0o120777), "is a link", id="symlink"),
        pytest.param(dict(name="train/cat/a.png", mode=0o020644), "device", id="char-device"),
        pytest.param(dict(name="train/cat/a.png", flag=1), "encrypted", id="encrypted"),
        pytest.param(dict(name="train/cat/a.png", data=b"\0" * (100 * MiB), compress=zipfile.ZIP_DEFLATED),
                     "decompression bomb|implausibly large", id="zip-bomb"),
    ],
)
def test_bad_zip_members(tmp_path, data_env, kw, match):
    z = _zip_with(tmp_path / "x.zip", **kw)
    refused(load_cifar10, z, progress=False, match=match)
    assert_cache_clean(data_env)


def test_corrupted_zip(tmp_path, data_env):
    root = tmp_path / "tree"
    make_image_tree(root, splits=("train",))
    z = _zip_tree(root, tmp_path / "images.zip")
    raw = z.read_bytes()
    z.write_bytes(raw[: len(raw) // 2])
    refused(load_cifar10, z, progress=False, match="unreadable archive")


# --- special files --------------------------------------------------------------------------


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.fixture
def unix_socket(tmp_path):
    s = socket.socket(socket.AF_UNIX)
    path = tmp_path / "sock.tar.gz"
    s.bind(str(path))
    yield path
    s.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["dev-zero", "link-to-dev-zero", "fifo", "socket", "dev-null"])
def test_special_files_refused_before_reading(tmp_path, data_env, kind, request):
    if kind == "dev-zero":
        path = Path("/dev/zero")
    elif kind == "dev-null":
        path = Path("/dev/null")
    elif kind == "link-to-dev-zero":
        path = tmp_path / "cifar.tar.gz"
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        path = _fifo(tmp_path / "cifar.tar.gz")
    else:
        path = request.getfixturevalue("unix_socket")
    msg = refused(load_cifar10, path, progress=False, match="not a file or folder")
    assert msg.startswith(f"--data {path}: a ")
    assert not (data_env / "file-hashes.json").exists()  # refused before hashing


@pytest.mark.timeout(60)
def test_dev_zero_from_environment(tmp_path, data_env, monkeypatch):
    monkeypatch.setenv("DASKMEANS_DATA", "/dev/zero")
    refused(load_cifar10, progress=False, match="^DASKMEANS_DATA=/dev/zero: a character device")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["fifo", "link-to-dev-zero", "huge-sparse"])
def test_special_files_inside_folders(tmp_path, data_env, kind):
    root = tmp_path / "tree"
    make_image_tree(root, splits=("train",))
    bad = root / "train" / "cat" / "zz.png"
    if kind == "fifo":
        _fifo(bad)
        match = "FIFO"
    elif kind == "link-to-dev-zero":
        bad.symlink_to("/dev/zero")
        match = "character device"
    else:
        with open(bad, "wb") as f:
            f.truncate(10 * 2**30)  # 10 GiB, sparse: no 32x32 image is that large
        match = "more than any image file should hold"
    msg = refused(load_cifar10, root, progress=False, match=match)
    assert str(bad) in msg


@pytest.mark.timeout(60)
def test_official_folder_batch_is_a_fifo(tmp_path, data_env):
    blobs, _ = official_blobs()
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, b in blobs.items():
        if name == "data_batch_3":
            _fifo(folder / name)
        else:
            (folder / name).write_bytes(b)
    refused(load_cifar10, folder, progress=False, match="data_batch_3")


# --- the download and the cache ---------------------------------------------------------------


def _forged_archive(tmp_path: Path) -> Path:
    """A small archive in the official layout (not the official archive)."""
    blobs, _ = official_blobs()
    for k in list(blobs):
        if k != "batches.meta":
            blobs[k] = _official_batch(1)
    blobs["batches.meta"] = _meta(rows=1)
    return write_tar(tmp_path / "forged.tar.gz", {f"cifar-10-batches-py/{k}": v for k, v in blobs.items()})


def test_forged_cached_archive_not_served(tmp_path, data_env):
    forged = _forged_archive(tmp_path)
    cached = data_env / "cifar-10-python.tar.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(forged.read_bytes())
    msg = refused(load_cifar10, progress=False, match="not the official CIFAR-10 archive")
    assert str(cached) in msg and fetch_mod.ARCHIVE_MD5 in msg and "removed it" in msg
    assert not cached.exists()
    assert not (data_env / "stores").exists()


@pytest.mark.parametrize("md5", ["", None, "0" * 32])
def test_config_cannot_switch_the_md5_off(tmp_path, data_env, md5):
    # The issue: {download: {url: file:///forged, md5: ''}} cached a forged archive for later runs.
    forged = _forged_archive(tmp_path)
    with dask.config.set({"daskmeans.download.url": forged.as_uri(), "daskmeans.download.md5": md5}):
        msg = refused(load_cifar10, progress=False, match="expected " + fetch_mod.ARCHIVE_MD5)
    assert hashlib.md5(forged.read_bytes()).hexdigest() in msg
    assert not data_env.exists() or sorted(p.name for p in data_env.iterdir()) == []


def test_download_longer_than_the_archive_cut_off(tmp_path, data_env, monkeypatch):
    from test_data import _Server

    monkeypatch.setattr(fetch_mod, "ARCHIVE_BYTES", 1000)
    with _Server(b"x" * 5000) as srv, dask.config.set({"daskmeans.download.url": srv.url}):
        msg = refused(resolve_source, progress=False)
    assert "5,000 bytes" in msg and "1,000" in msg
    assert not data_env.exists() or sorted(p.name for p in data_env.iterdir()) == []


def test_foreign_keras_archive_skipped(tmp_path, data_env, caplog):
    keras = tmp_path / "home" / ".keras" / "datasets" / "cifar-10-batches-py.tar.gz"
    keras.parent.mkdir(parents=True)
    keras.write_bytes(_forged_archive(tmp_path).read_bytes())
    with caplog.at_level(logging.WARNING, logger="daskmeans"):
        msg = refused(resolve_source, progress=False, match="downloading")
    assert keras.exists()  # not ours to remove
    assert any("not the official CIFAR-10 archive" in r.getMessage() for r in caplog.records)
    assert "no CIFAR-10 data found" in msg


# --- images that are not RGB ------------------------------------------------------------------


def test_non_rgb_images_warned_once(tmp_path, caplog):
    root = tmp_path / "tree"
    make_image_tree(root)  # one grayscale and one RGBA file per split
    palette = root / "train" / "airplane" / "p.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).convert("P").save(palette)
    with caplog.at_level(logging.WARNING, logger="daskmeans"):
        ingest(root, progress=False)
    warned = [r.getMessage() for r in caplog.records if "not RGB" in r.getMessage()]
    assert len(warned) == 1, warned
    assert "5 images were not RGB, converted to RGB" in warned[0]
    assert str(root) in warned[0] and " is " in warned[0]
    # Neighbours: a tarball says so too; an all-RGB tree says nothing.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="daskmeans"):
        ingest(tar_tree(root, tmp_path / "t.tar.gz"), progress=False)
    assert sum("5 images were not RGB" in r.getMessage() for r in caplog.records) == 1
    rgb = tmp_path / "rgb" / "train" / "cat"
    rgb.mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(rgb / "a.png")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="daskmeans"):
        ingest(tmp_path / "rgb", progress=False)
    assert not [r for r in caplog.records if "not RGB" in r.getMessage()]


# --- the command line: exit 2 and one line -------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "case",
    ["dev-zero", pytest.param("fifo", marks=pytest.mark.slow), pytest.param("bomb", marks=pytest.mark.slow),
     pytest.param("blank-md5", marks=pytest.mark.slow)],
)
def test_cli_one_line_exit_2(tmp_path, case):
    # One subprocess each (a second or more): dev-zero in the default suite, the rest with -m slow.
    if case == "dev-zero":
        args, extra = ["--data", "/dev/zero"], {}
    elif case == "fifo":
        args, extra = ["--data", str(_fifo(tmp_path / "pipe.tar.gz"))], {}
    elif case == "bomb":
        args, extra = ["--data", str(_zero_bomb(tmp_path / "bomb.tar.gz", [f"images/train/cat/{i}.png" for i in range(6)]))], {}
    else:
        forged = _forged_archive(tmp_path)
        args, extra = [], {"DASK_DASKMEANS__DOWNLOAD__URL": forged.as_uri(), "DASK_DASKMEANS__DOWNLOAD__MD5": ""}
    env = dict(os.environ, DASKMEANS_CACHE=str(tmp_path / "cache"), HOME=str(tmp_path / "home"), **extra)
    env.pop("DASKMEANS_DATA", None)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "daskmeans.cli", "ingest", "-q", *args], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=100)
    lines = p.stderr.splitlines()
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and lines[0].startswith("daskmeans: error: "), p.stderr
    assert time.monotonic() - t0 < 60
    print(f"[{case}] exit {p.returncode}: {lines[0]}")
