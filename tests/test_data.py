"""Tests of daskmeans.data: sources, ingest into Zarr, download, safety."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import pickle
import socket
import struct
import sys
import tarfile
import threading
import time
from pathlib import Path

import dask
import numpy as np
import pytest
from PIL import Image

from daskmeans.data import Dataset, ingest, load_cifar10, resolve_source
from daskmeans.data import fetch as fetch_mod, safety, store as store_mod
from daskmeans.errors import DataError, InputError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
N_PER_BATCH = 20


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(autouse=True)
def data_env(tmp_path, monkeypatch):
    """Isolate every test: cache and HOME in tmp_path, no DASKMEANS_DATA, no internet."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DASKMEANS_CACHE", str(cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DASKMEANS_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    # A closed local port: any accidental download fails fast and offline.
    url = f"http://127.0.0.1:{_closed_port()}/cifar-10-python.tar.gz"
    with dask.config.set({"daskmeans.cache-dir": None, "daskmeans.download.url": url}):
        yield cache


def assert_one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


def assert_cache_clean(cache: Path):
    """Nothing half-written: no store, temp folder or partial download."""
    stores = cache / "stores"
    left = sorted(p.name for p in stores.iterdir()) if stores.exists() else []
    assert left == []
    if cache.exists():
        assert not [p.name for p in cache.iterdir() if ".part" in p.name or p.suffix == ".gz"]


# --- builders: official layout ----------------------------------------------------


def planar_to_hwc(data: np.ndarray) -> np.ndarray:
    """Independent decode of CIFAR rows: stack the R, G, B planes as the last axis."""
    r, g, b = data[:, :1024], data[:, 1024:2048], data[:, 2048:]
    return np.stack([r, g, b], axis=-1).reshape(len(data), 32, 32, 3)


def official_batches(seed=0, str_keys=False):
    """name -> batch dict as in the official archive (bytes keys), plus the meta dict."""
    rng = np.random.default_rng(seed)
    batches = {}
    for name in (*TRAIN, "test_batch"):
        data = rng.integers(0, 256, (N_PER_BATCH, 3072), dtype=np.uint8)
        if name == "data_batch_1":
            data[0] = np.arange(3072) % 256  # known values for explicit checks
        labels = [int(x) for x in rng.integers(0, 10, N_PER_BATCH)]
        batch = {
            b"batch_label": f"{name} of 5".encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"{name}_{i:04d}.png".encode() for i in range(N_PER_BATCH)],
        }
        if str_keys and name == "test_batch":
            batch = {k.decode(): v for k, v in batch.items()}
        batches[name] = batch
    meta = {b"num_cases_per_batch": N_PER_BATCH, b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}
    return batches, meta


class Py2Pickler(pickle._Pickler):
    """Writes pickles as Python 2's cPickle did for the official batches: every
    str/bytes as BINSTRING and ``numpy.core.multiarray._reconstruct``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin1"))

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", None) == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _dumps(obj, py2: bool) -> bytes:
    if not py2:
        return pickle.dumps(obj, protocol=2)
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def official_blobs(seed=0, str_keys=False, py2=False) -> tuple[dict[str, bytes], dict]:
    batches, meta = official_batches(seed, str_keys)
    blobs = {name: _dumps(b, py2) for name, b in batches.items()}
    blobs["batches.meta"] = _dumps(meta, py2)
    return blobs, batches


def write_tar(path: Path, members: dict[str, bytes], mode="w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_500_000_000
            tf.addfile(info, io.BytesIO(data))
    return path


def make_official_tar(tmp_path: Path, **kw) -> tuple[Path, dict]:
    blobs, batches = official_blobs(**kw)
    members = {f"cifar-10-batches-py/{n}": b for n, b in blobs.items()}
    members["cifar-10-batches-py/readme.html"] = b"<html></html>"
    return write_tar(tmp_path / "cifar-10-python.tar.gz", members), batches


def make_official_dir(root: Path, **kw) -> tuple[Path, dict]:
    blobs, batches = official_blobs(**kw)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, b in blobs.items():
        (folder / name).write_bytes(b)
    return folder, batches


def expected_official(batches):
    def get(b, k):
        return b[k] if k in b else b[k.decode()]

    train = np.concatenate([planar_to_hwc(get(batches[n], b"data")) for n in TRAIN])
    train_y = np.concatenate([get(batches[n], b"labels") for n in TRAIN])
    test = planar_to_hwc(get(batches["test_batch"], b"data"))
    test_y = np.asarray(get(batches["test_batch"], b"labels"))
    return train, train_y, test, test_y


# --- builders: image folders --------------------------------------------------------


def make_image_tree(root: Path, splits=("train", "test"), single=False, seed=1):
    """Write PNGs with known pixels; return {split: (images, labels)} in the expected order.

    Classes and files are created out of order to check the sorting.
    """
    rng = np.random.default_rng(seed)
    classes = ("dog", "airplane", "cat")  # sorted: airplane=0, cat=1, dog=2
    names = ("b.png", "a.png", "c.PNG")
    expected = {}
    for split in splits:
        rows = []
        for cls in classes:
            folder = root / cls if single else root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for fname in names:
                arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                if fname == "a.png" and cls == "cat":  # grayscale file
                    gray = arr[..., 0]
                    Image.fromarray(gray, mode="L").save(folder / fname)
                    arr = np.stack([gray] * 3, axis=-1)
                elif fname == "b.png" and cls == "dog":  # RGBA file: alpha dropped
                    rgba = np.concatenate([arr, rng.integers(0, 256, (32, 32, 1), dtype=np.uint8)], axis=-1)
                    Image.fromarray(rgba, mode="RGBA").save(folder / fname)
                else:
                    Image.fromarray(arr).save(folder / fname)
                rows.append((cls, fname, arr))
            (folder / "notes.txt").write_text("not an image, ignored")
        rows.sort(key=lambda r: (r[0], r[1]))
        label = {c: i for i, c in enumerate(sorted(classes))}
        expected[split] = (np.stack([r[2] for r in rows]), np.array([label[r[0]] for r in rows]))
        if single:
            break
    return expected


def tar_tree(src: Path, out: Path, top: str | None = "images") -> Path:
    with tarfile.open(out, "w:gz") as tf:
        for p in sorted(src.rglob("*"), reverse=True):  # member order must not matter
            arc = p.relative_to(src).as_posix()
            tf.add(p, arcname=f"{top}/{arc}" if top else arc, recursive=False)
    return out


# --- official archive and folder ------------------------------------------------------


@pytest.mark.parametrize("form", ["tarball", "folder", "parent"])
def test_official_layout_pixels_and_labels(tmp_path, form, data_env):
    if form == "tarball":
        src, batches = make_official_tar(tmp_path)
    else:
        folder, batches = make_official_dir(tmp_path / "extracted")
        src = folder if form == "folder" else folder.parent
    train, train_y, test, test_y = expected_official(batches)

    ds = load_cifar10(src, split="train", progress=False)
    assert ds.class_names == CLASSES
    assert ds.images.shape == (5 * N_PER_BATCH, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int16
    np.testing.assert_array_equal(ds.images.compute(), train)
    np.testing.assert_array_equal(ds.labels.compute(), train_y)
    # Explicit HWC check on the known row: R plane first, then G, then B.
    img0 = ds.images[0].compute()
    assert img0[0, 1, 0] == 1 and img0[0, 0, 1] == 1024 % 256 and img0[1, 0, 2] == (2048 + 32) % 256

    te = load_cifar10(src, split="test", progress=False)
    np.testing.assert_array_equal(te.images.compute(), test)
    np.testing.assert_array_equal(te.labels.compute(), test_y)

    al = load_cifar10(src, split="all", progress=False)
    np.testing.assert_array_equal(al.images.compute(), np.concatenate([train, test]))
    np.testing.assert_array_equal(al.labels.compute(), np.concatenate([train_y, test_y]))
    assert Path(ds.store).parent == data_env / "stores"
    assert ds.source == str(src.resolve())


def test_official_python2_pickles(tmp_path):
    src, batches = make_official_tar(tmp_path, py2=True)
    assert b"numpy.core.multiarray" in official_blobs(py2=True)[0]["data_batch_1"]
    train, train_y, _, _ = expected_official(batches)
    ds = load_cifar10(src, progress=False)
    assert ds.class_names == CLASSES
    np.testing.assert_array_equal(ds.images.compute(), train)
    np.testing.assert_array_equal(ds.labels.compute(), train_y)


def test_official_str_keys_accepted(tmp_path):
    src, batches = make_official_tar(tmp_path, str_keys=True)
    _, _, test, test_y = expected_official(batches)
    te = load_cifar10(src, split="test", progress=False)
    np.testing.assert_array_equal(te.images.compute(), test)
    np.testing.assert_array_equal(te.labels.compute(), test_y)


def test_store_layout(tmp_path, data_env):
    src, _ = make_official_tar(tmp_path)
    path = ingest(src, progress=False)
    assert path.name.startswith("cifar-10-python-") and path.suffix == ".zarr"
    assert len(path.stem.rsplit("-", 1)[1]) == 16
    import zarr

    root = zarr.open_group(str(path), mode="r")
    assert root.attrs["complete"] is True
    assert root.attrs["class_names"] == list(CLASSES)
    assert root.attrs["format_version"] == store_mod.FORMAT_VERSION
    assert root.attrs["source"] == str(src.resolve())
    assert len(root.attrs["fingerprint"]) == 64
    assert root["train/images"].chunks == (1024, 32, 32, 3)
    assert root["train/images"].dtype == np.uint8
    assert root["train/labels"].dtype == np.int16
    assert root["test/images"].shape == (N_PER_BATCH, 32, 32, 3)
    # Opening the store directly as --data serves it as is, no copy.
    assert ingest(path, progress=False) == path
    assert load_cifar10(path, split="test", progress=False).store == str(path)


# --- image folders ------------------------------------------------------------------


def _check_tree(ds: Dataset, expected, split):
    images, labels = expected[split]
    assert ds.class_names == ("airplane", "cat", "dog")
    np.testing.assert_array_equal(ds.images.compute(), images)
    np.testing.assert_array_equal(ds.labels.compute(), labels)


def test_image_folder_tree(tmp_path):
    root = tmp_path / "tree"
    expected = make_image_tree(root)
    for split in ("train", "test"):
        _check_tree(load_cifar10(root, split=split, progress=False), expected, split)


@pytest.mark.parametrize("top", ["images", None])
def test_image_folder_tarball(tmp_path, top):
    root = tmp_path / "tree"
    expected = make_image_tree(root)
    tgz = tar_tree(root, tmp_path / "tree.tar.gz", top=top)
    for split in ("train", "test"):
        _check_tree(load_cifar10(tgz, split=split, progress=False), expected, split)


def test_image_folder_single_split_root(tmp_path):
    root = tmp_path / "flat"
    expected = make_image_tree(root, single=True)
    ds = load_cifar10(root, split="train", progress=False)
    _check_tree(ds, expected, "train")
    with pytest.raises(DataError, match="no test split") as err:
        load_cifar10(root, split="test", progress=False)
    assert_one_line(err)
    assert load_cifar10(root, split="all", progress=False).n_samples == ds.n_samples


def test_image_folder_train_only_tarball(tmp_path):
    root = tmp_path / "tree"
    expected = make_image_tree(root, splits=("train",))
    tgz = tar_tree(root, tmp_path / "t.tgz", top=None)
    _check_tree(load_cifar10(tgz, progress=False), expected, "train")


def test_jpeg_decoded_like_pillow(tmp_path):
    root = tmp_path / "jpg"
    (root / "train" / "frog").mkdir(parents=True)
    arr = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(arr).save(root / "train" / "frog" / "x.jpeg", quality=90)
    ds = load_cifar10(root, progress=False)
    with Image.open(root / "train" / "frog" / "x.jpeg") as im:
        ref = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(ds.images[0].compute(), ref)


# --- Dataset API ----------------------------------------------------------------------


@pytest.fixture
def small(tmp_path) -> Dataset:
    src, _ = make_official_tar(tmp_path)
    return load_cifar10(src, split="all", chunk_size=7, progress=False)


def test_chunks_and_flat(small):
    assert small.n_samples == 6 * N_PER_BATCH
    assert all(c <= 7 for c in small.images.chunks[0])
    assert small.images.chunks[1:] == ((32,), (32,), (3,))
    assert small.labels.chunks[0] == small.images.chunks[0]
    flat = small.flat()
    assert flat.shape == (small.n_samples, 3072) and flat.dtype == np.uint8
    assert flat.chunks[0] == small.images.chunks[0]
    imgs = small.images.compute()
    np.testing.assert_array_equal(flat.compute(), imgs.reshape(len(imgs), -1))
    # HWC flatten: the first three values are the RGB of pixel (0, 0).
    np.testing.assert_array_equal(flat[0, :3].compute(), imgs[0, 0, 0])


def test_default_chunk_size_from_config(tmp_path):
    src, _ = make_official_tar(tmp_path)
    with dask.config.set({"daskmeans.chunk-size": 30}):
        ds = load_cifar10(src, progress=False)
    assert ds.images.chunks[0] == (30, 30, 30, 10)


def test_graph_reads_from_disk(small):
    # The graph must not embed the pixels: it is small and recomputes after pickling.
    import cloudpickle

    blob = cloudpickle.dumps(small.images)
    assert len(blob) < 200_000
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again.compute(), small.images.compute())


def test_subset(small):
    sub = small.subset(50, seed=42)
    assert sub.n_samples == 50
    idx = sub.indices
    assert len(np.unique(idx)) == 50 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, np.sort(np.random.default_rng(42).choice(small.n_samples, 50, replace=False)))
    np.testing.assert_array_equal(small.subset(50, seed=42).indices, idx)
    assert not np.array_equal(small.subset(50, seed=43).indices, idx)
    assert max(sub.images.chunks[0]) <= 7 and sub.labels.chunks[0] == sub.images.chunks[0]
    np.testing.assert_array_equal(sub.images.compute(), small.images.compute()[idx])
    np.testing.assert_array_equal(sub.labels.compute(), small.labels.compute()[idx])
    nested = sub.subset(10, seed=0)
    np.testing.assert_array_equal(nested.images.compute(), small.images.compute()[nested.indices])
    assert small.subset(small.n_samples, seed=0).n_samples == small.n_samples
    d = sub.describe()
    json.dumps(d)
    assert d["n_samples"] == 50 and d["indices"] == idx.tolist() and d["split"] == "all"
    assert d["class_names"] == list(CLASSES) and d["chunk_rows"] <= 7
    assert small.describe()["indices"] is None


def test_subset_errors(small):
    n = small.n_samples
    with pytest.raises(InputError) as err:
        small.subset(n + 1, seed=0)
    assert assert_one_line(err) == (
        f"--subset {n + 1} is larger than the all split ({n} images); use at most {n}"
    )
    with pytest.raises(InputError):
        small.subset(0, seed=0)


def test_bad_split_and_chunk_size(tmp_path):
    src, _ = make_official_tar(tmp_path)
    with pytest.raises(InputError, match="--split"):
        load_cifar10(src, split="validation", progress=False)
    with pytest.raises(InputError, match="--chunk-size"):
        load_cifar10(src, chunk_size=0, progress=False)


# --- ingest caching -------------------------------------------------------------------


def _forbid_reads(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("source was decoded again")

    monkeypatch.setattr(store_mod, "read_source", boom)


def test_reuse_when_unchanged_reingest_when_changed(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    make_image_tree(root)
    first = ingest(root, progress=False)
    stamp = (first / "zarr.json").stat().st_mtime_ns
    with monkeypatch.context() as m:
        _forbid_reads(m)
        assert ingest(root, progress=False) == first
    assert (first / "zarr.json").stat().st_mtime_ns == stamp

    # Modify one image (new pixels, later mtime): a new fingerprint and store.
    target = root / "train" / "airplane" / "a.png"
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(target)
    os.utime(target, ns=(time.time_ns() + 10**9,) * 2)
    second = ingest(root, progress=False)
    assert second != first
    ds = load_cifar10(root, progress=False)
    assert ds.store == str(second)
    np.testing.assert_array_equal(ds.images[0].compute(), np.full((32, 32, 3), 7, np.uint8))


def test_tarball_hash_cache_and_change(tmp_path, monkeypatch, data_env):
    src, _ = make_official_tar(tmp_path)
    first = ingest(src, progress=False)
    hashes = json.loads((data_env / "file-hashes.json").read_text())
    assert hashes[os.path.realpath(src)][2] == hashlib.sha256(src.read_bytes()).hexdigest()
    with monkeypatch.context() as m:
        _forbid_reads(m)
        # A cached hash must not be recomputed: the archive is not opened at all.
        m.setattr(store_mod, "open", lambda *a, **k: pytest.fail("archive rehashed"), raising=False)
        assert ingest(src, progress=False) == first
    make_official_tar(tmp_path, seed=5)  # rewrite the archive with other pixels
    second = ingest(src, progress=False)
    assert second != first and first.exists()


def test_incomplete_store_never_served(tmp_path, data_env):
    src, _ = make_official_tar(tmp_path)
    path = ingest(src, progress=False)
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["complete"] = False
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="incomplete store") as err:
        load_cifar10(path, progress=False)  # given directly: refused
    assert_one_line(err)
    again = ingest(src, progress=False)  # found in the cache: rebuilt
    assert again == path
    assert json.loads((path / "zarr.json").read_text())["attributes"]["complete"] is True


def test_interrupted_ingest_leaves_nothing(tmp_path, monkeypatch, data_env):
    root = tmp_path / "tree"
    make_image_tree(root)
    from daskmeans.data import sources

    calls = []
    real = sources._decode_one

    def flaky(data, name):
        calls.append(name)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(data, name)

    monkeypatch.setattr(sources, "_decode_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        ingest(root, progress=False)
    assert_cache_clean(data_env)


def _dead_pid() -> int:
    import subprocess

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_tmp_cleaned_and_race_lost(tmp_path, monkeypatch, data_env):
    import subprocess

    src, _ = make_official_tar(tmp_path)
    final = store_mod.store_path(src, data_env)
    final.parent.mkdir(parents=True)
    # Staging of a killed ingest (its pid is gone) and of a running one (a live child).
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stale = final.parent / f".{final.name}.tmp-{_dead_pid()}-dead"
    fresh = final.parent / f".{final.name}.tmp-{busy.pid}-busy"
    stale.mkdir()
    fresh.mkdir()
    request_cleanup = busy

    # Simulate a concurrent ingest that finishes first: it renames its store into place.
    real_write = store_mod._write_store

    def racing(tmp, *a, **k):
        real_write(tmp, *a, **k)
        other = final.parent / "winner"
        real_write(other, *a, **k)
        os.rename(other, final)

    monkeypatch.setattr(store_mod, "_write_store", racing)
    try:
        assert ingest(src, progress=False) == final
        left = sorted(p.name for p in final.parent.iterdir())
        assert left == sorted([final.name, fresh.name])  # stale removed, ours removed, fresh kept
    finally:
        request_cleanup.kill()
        request_cleanup.wait()


# --- finding and downloading ------------------------------------------------------------


def test_resolve_source_order(tmp_path, monkeypatch, data_env):
    # Cached archives are served only when they are the official one: here b"x" stands for it.
    monkeypatch.setattr(fetch_mod, "ARCHIVE_MD5", hashlib.md5(b"x").hexdigest())
    home_keras = tmp_path / "home" / ".keras" / "datasets"
    keras_tgz = home_keras / "cifar-10-batches-py.tar.gz"
    keras_tgz.parent.mkdir(parents=True)
    keras_tgz.write_bytes(b"x")
    assert resolve_source() == keras_tgz.resolve()
    (home_keras / "cifar-10-batches-py").mkdir()
    assert resolve_source() == (home_keras / "cifar-10-batches-py").resolve()
    (data_env / "cifar-10-batches-py").mkdir(parents=True)
    assert resolve_source() == (data_env / "cifar-10-batches-py").resolve()
    (data_env / "cifar-10-python.tar.gz").write_bytes(b"x")
    assert resolve_source() == (data_env / "cifar-10-python.tar.gz").resolve()  # md5(b"x") patched in
    monkeypatch.setenv("DASKMEANS_DATA", str(tmp_path))
    assert resolve_source() == tmp_path.resolve()
    assert resolve_source(tmp_path / "home") == (tmp_path / "home").resolve()
    assert resolve_source("keras") == "keras"
    monkeypatch.setenv("DASKMEANS_DATA", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="^DASKMEANS_DATA=.*nope: no such file or folder"):
        resolve_source()


class _Server:
    """Serve ``payload`` on 127.0.0.1 (port 0) from a thread."""

    def __init__(self, payload: bytes):
        body = payload

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cifar-10-python.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_verified(tmp_path, data_env, monkeypatch):
    src, batches = make_official_tar(tmp_path)
    payload = src.read_bytes()
    # The md5 is a constant, not a setting: the test archive stands in for the official one.
    monkeypatch.setattr(fetch_mod, "ARCHIVE_MD5", hashlib.md5(payload).hexdigest())
    with _Server(payload) as srv, dask.config.set({"daskmeans.download.url": srv.url}):
        got = resolve_source(progress=False)
        assert got == (data_env / "cifar-10-python.tar.gz").resolve()
        assert got.read_bytes() == payload
        assert [p.name for p in data_env.iterdir()] == ["cifar-10-python.tar.gz"]
    # Now found in the cache: no server needed.
    ds = load_cifar10(progress=False)
    np.testing.assert_array_equal(ds.labels.compute(), expected_official(batches)[1])


def test_download_md5_mismatch(tmp_path, data_env):
    payload = b"definitely not cifar"
    # Config cannot switch the check off (an empty md5 was once accepted).
    with _Server(payload) as srv, dask.config.set({"daskmeans.download.url": srv.url, "daskmeans.download.md5": ""}):
        with pytest.raises(DataError) as err:
            resolve_source(progress=False)
    msg = assert_one_line(err)
    assert hashlib.md5(payload).hexdigest() in msg and fetch_mod.ARCHIVE_MD5 in msg
    assert list(data_env.iterdir()) == []


def test_offline(tmp_path, data_env):
    with pytest.raises(DataError) as err:
        load_cifar10(progress=False)
    msg = assert_one_line(err)
    assert "$DASKMEANS_DATA (unset)" in msg
    assert str(data_env / "cifar-10-python.tar.gz") in msg and str(data_env / "cifar-10-batches-py") in msg
    assert str(tmp_path / "home" / ".keras" / "datasets" / "cifar-10-batches-py") in msg
    assert "pass --data PATH" in msg and "set DASKMEANS_DATA" in msg
    assert not data_env.exists() or list(data_env.iterdir()) == []


def test_keras_without_tensorflow():
    try:
        import tensorflow  # noqa: F401

        pytest.skip("TensorFlow is installed")
    except ImportError:
        pass
    with pytest.raises(DataError) as err:
        load_cifar10("keras", progress=False)
    assert assert_one_line(err) == (
        "--data keras needs TensorFlow: pip install 'daskmeans[keras]' (or pass --data PATH)"
    )


def test_tensorflow_never_imported(tmp_path):
    src, _ = make_official_tar(tmp_path)
    load_cifar10(src, progress=False)
    assert "tensorflow" not in sys.modules


# --- safety ----------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_refused(tmp_path, data_env):
    marker = tmp_path / "pwned"
    blobs, _ = official_blobs()
    blobs["data_batch_1"] = pickle.dumps({b"data": _Evil(marker), b"labels": []}, protocol=2)
    tgz = write_tar(tmp_path / "cifar-10-python.tar.gz", {f"cifar-10-batches-py/{k}": v for k, v in blobs.items()})
    with pytest.raises(DataError) as err:
        load_cifar10(tgz, progress=False)
    msg = assert_one_line(err)
    assert msg.startswith(f"refusing to unpickle {os.system.__module__}.system from ")
    assert "data_batch_1" in msg and "not a CIFAR-10 batch" in msg
    assert not marker.exists()
    assert_cache_clean(data_env)


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(eval, protocol=2),
        b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R.",
        pickle.dumps(np.float64(1.0), protocol=2),  # numpy scalars are not in a batch
    ],
)
def test_safe_loads_refuses(payload):
    with pytest.raises(DataError) as err:
        safety.safe_loads(payload, "x")
    assert_one_line(err)


def test_safe_loads_ndarray_roundtrip():
    arr = np.arange(3072, dtype=np.uint8).reshape(1, 3072)
    for proto in (2, 4):
        got = safety.safe_loads(pickle.dumps({b"data": arr}, protocol=proto), "x")
        np.testing.assert_array_equal(got[b"data"], arr)


def _crafted_tar(path: Path, bad: tarfile.TarInfo):
    with tarfile.open(path, "w:gz") as tf:
        ok = tarfile.TarInfo("images/train/cat/0.png")
        buf = io.BytesIO()
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, format="PNG")
        ok.size = len(buf.getvalue())
        tf.addfile(ok, io.BytesIO(buf.getvalue()))
        if bad.isfile():
            tf.addfile(bad, io.BytesIO(b"x" * bad.size))
        else:
            tf.addfile(bad)
    return path


def _member(name, type_=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    info.size = 1 if type_ == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    "member",
    [
        _member("/etc/cron.d/evil.png"),
        _member("images/../../evil.png"),
        _member("images/train/cat/link.png", tarfile.SYMTYPE, "/etc/passwd"),
        _member("images/train/cat/hard.png", tarfile.LNKTYPE, "images/train/cat/0.png"),
        _member("images/train/cat/dev.png", tarfile.CHRTYPE),
        _member("images/train/cat/fifo.png", tarfile.FIFOTYPE),
    ],
    ids=["absolute", "dotdot", "symlink", "hardlink", "device", "fifo"],
)
def test_unsafe_tar_members(tmp_path, member, data_env):
    tgz = _crafted_tar(tmp_path / "bad.tar.gz", member)
    with pytest.raises(DataError) as err:
        load_cifar10(tgz, progress=False)
    msg = assert_one_line(err)
    assert repr(member.name) in msg and "unsafe archive member" in msg
    assert not (tmp_path.parent / "evil.png").exists()
    assert_cache_clean(data_env)


def test_truncated_and_corrupted_archives(tmp_path, data_env):
    src, _ = make_official_tar(tmp_path)
    whole = src.read_bytes()
    cases = {
        "truncated.tar.gz": whole[: len(whole) // 2],
        "corrupted.tar.gz": whole[:200] + bytes(b ^ 0xFF for b in whole[200:400]) + whole[400:],
        "random.tar.gz": np.random.default_rng(0).bytes(5000),
        "empty.tar": b"",
    }
    for name, blob in cases.items():
        bad = tmp_path / name
        bad.write_bytes(blob)
        with pytest.raises(DataError) as err:
            load_cifar10(bad, progress=False)
        msg = assert_one_line(err)
        assert str(bad) in msg, name
        assert_cache_clean(data_env)


def test_incomplete_official_archive(tmp_path, data_env):
    blobs, _ = official_blobs()
    del blobs["test_batch"]
    tgz = write_tar(tmp_path / "c.tar.gz", {f"cifar-10-batches-py/{k}": v for k, v in blobs.items()})
    with pytest.raises(DataError, match="missing test_batch") as err:
        load_cifar10(tgz, progress=False)
    assert_one_line(err)
    assert_cache_clean(data_env)


def test_wrong_batch_content(tmp_path, data_env):
    blobs, _ = official_blobs()
    blobs["data_batch_2"] = pickle.dumps({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, protocol=2)
    tgz = write_tar(tmp_path / "c.tar.gz", {f"cifar-10-batches-py/{k}": v for k, v in blobs.items()})
    with pytest.raises(DataError, match="data_batch_2") as err:
        load_cifar10(tgz, progress=False)
    assert_one_line(err)
    assert_cache_clean(data_env)


def test_wrong_layout(tmp_path, data_env):
    tgz = write_tar(tmp_path / "other.tar.gz", {"README.md": b"hi", "stuff/notes.txt": b"x"})
    with pytest.raises(DataError, match="no CIFAR-10 batches and no class folders") as err:
        load_cifar10(tgz, progress=False)
    assert "pass --data PATH" in assert_one_line(err)
    deep = tmp_path / "deep"
    (deep / "a" / "b" / "c" / "d").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(deep / "a" / "b" / "c" / "d" / "x.png")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(deep / "a" / "y.png")
    with pytest.raises(DataError, match="unexpected image-folder layout") as err:
        load_cifar10(deep, progress=False)
    assert_one_line(err)
    assert_cache_clean(data_env)


def test_bad_images(tmp_path, data_env):
    root = tmp_path / "tree"
    make_image_tree(root, splits=("train",))
    fake = root / "train" / "cat" / "zz.jpg"
    fake.write_text("this is not a jpeg")
    with pytest.raises(DataError) as err:
        load_cifar10(root, progress=False)
    msg = assert_one_line(err)
    assert str(fake) in msg and "not a readable image" in msg
    assert_cache_clean(data_env)

    fake.unlink()
    big = root / "train" / "cat" / "zz.png"
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(big)
    with pytest.raises(DataError) as err:
        load_cifar10(tar_tree(root, tmp_path / "t.tar.gz"), progress=False)
    msg = assert_one_line(err)
    assert "train/cat/zz.png" in msg and "24x16" in msg and "expected 32x32" in msg
    assert_cache_clean(data_env)


def test_missing_path(tmp_path, data_env):
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path / "x" / "y", progress=False)
    assert assert_one_line(err).startswith(f"--data {tmp_path / 'x' / 'y'}: no such file or folder; ")
    assert_cache_clean(data_env)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without read permission")
def test_unreadable_path(tmp_path):
    f = tmp_path / "locked.tar.gz"
    f.write_bytes(b"x")
    f.chmod(0)
    with pytest.raises(DataError, match="permission denied") as err:
        load_cifar10(f, progress=False)
    assert_one_line(err)


def test_foreign_zarr_refused(tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["x"] = 1
    with pytest.raises(DataError, match="not one written by daskmeans") as err:
        load_cifar10(tmp_path / "other.zarr", progress=False)
    assert_one_line(err)


def test_progress_output(tmp_path, capsys):
    root = tmp_path / "tree"
    make_image_tree(root)
    ingest(root, progress=True)
    err = capsys.readouterr().err
    assert "decoding images" in err and "18/18" in err
    load_cifar10(root, progress=False)
    assert capsys.readouterr().err == ""


# --- real data ----------------------------------------------------------------------------


@pytest.mark.data
def test_real_data_counts(cifar_store):
    train = load_cifar10(cifar_store, split="train", progress=False)
    test = load_cifar10(cifar_store, split="test", progress=False)
    assert train.n_samples == 50_000 and test.n_samples == 10_000
    assert train.class_names == CLASSES == test.class_names
    assert np.bincount(train.labels.compute(), minlength=10).tolist() == [5000] * 10
    assert np.bincount(test.labels.compute(), minlength=10).tolist() == [1000] * 10
    assert train.images.chunks[0][0] == 5000
    al = load_cifar10(cifar_store, split="all", progress=False)
    assert al.n_samples == 60_000


@pytest.mark.data
def test_real_data_pixels_match_pillow(cifar_store, real_data):
    # Stream the archive to the test/dog folder: its sorted names give the row.
    folder, target = "test/dog/", "test/dog/0007.jpg"
    names, blob = [], None
    with tarfile.open(real_data, "r|gz") as tf:
        for m in tf:
            name = m.name.removeprefix("./")
            if name.startswith(folder) and m.isfile():
                names.append(name)
                if name == target:
                    blob = tf.extractfile(m).read()
            elif names:
                break
    row = CLASSES.index("dog") * 1000 + sorted(names).index(target)
    with Image.open(io.BytesIO(blob)) as im:
        ref = np.asarray(im.convert("RGB"))
    test = load_cifar10(cifar_store, split="test", progress=False)
    np.testing.assert_array_equal(test.images[row].compute(), ref)
    assert int(test.labels[row].compute()) == CLASSES.index("dog")


@pytest.mark.distributed
def test_workers_read_from_store(small):
    # Worker processes rebuild the arrays from the store on disk, not from the client.
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            total = client.compute(small.subset(30, seed=1).flat().sum(dtype="uint64")).result()
    expected = small.images.compute()[small.subset(30, seed=1).indices].sum(dtype="uint64")
    assert int(total) == int(expected)
