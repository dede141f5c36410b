"""Stores in object stores: ingest once to a bucket, then workers of a real
``dask scheduler``/``dask worker`` cluster read their own chunks from it.

Servers are real processes on 127.0.0.1 started here: moto's S3-compatible server and
a plain HTTP server (read-only store). Each logs who asked for what, so the tests can
show that chunk reads come from the worker processes only: the client reads metadata.

* S3: the client and the workers run with different ``AWS_ACCESS_KEY_ID``\\ s (fsspec
  options travel in the graph; credentials from the environment do not), and the
  server logs the key of every request.
* HTTP: the ``get_client`` option (tests/_fsspec_ident.py) adds the sending process's
  pid to every request; the server logs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import dask
import numpy as np
import pytest

from daskmeans.data import ingest, load_cifar10
from daskmeans.errors import DataError
from helpers_dask import two_workers, wait_for
from test_data import assert_one_line, data_env, make_image_tree  # noqa: F401 - autouse fixture

pytestmark = pytest.mark.distributed

HERE = Path(__file__).resolve().parent

S3_SERVER = textwrap.dedent(
    """
    # moto's S3 server on 127.0.0.1, port 0; logs METHOD PATH ACCESS_KEY per request.
    import re, sys
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    log = open(sys.argv[1], "a", buffering=1)
    app = DomainDispatcherApplication(create_backend_app)
    akid = re.compile(r"Credential=([^/]+)/")

    def logged(environ, start_response):
        m = akid.search(environ.get("HTTP_AUTHORIZATION", ""))
        log.write(f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO')} {m.group(1) if m else '-'}\\n")
        return app(environ, start_response)

    srv = make_server("127.0.0.1", 0, logged, threaded=True)
    with open(sys.argv[2], "w") as f:
        f.write(str(srv.server_port))
    srv.serve_forever()
    """
)

HTTP_SERVER = textwrap.dedent(
    """
    # A plain HTTP server of one folder on 127.0.0.1, port 0; logs METHOD PATH PID-HEADER.
    import functools, http.server, sys

    log = open(sys.argv[1], "a", buffering=1)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            log.write(f"GET {self.path} {self.headers.get('X-Daskmeans-Test-Pid', '-')}\\n")
            super().do_GET()

        def do_HEAD(self):
            log.write(f"HEAD {self.path} {self.headers.get('X-Daskmeans-Test-Pid', '-')}\\n")
            super().do_HEAD()

    handler = functools.partial(Handler, directory=sys.argv[3])
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    with open(sys.argv[2], "w") as f:
        f.write(str(srv.server_port))
    srv.serve_forever()
    """
)

CHUNK = re.compile(r"/(train|test)/(images|labels)/c/")


class Server:
    """A server script in its own process; ``url``, ``log_lines()``; stopped by pid."""

    def __init__(self, folder: Path, script: str, *args: str):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "server.py").write_text(script)
        self.log = folder / "access.log"
        port_file = folder / "port"
        self.proc = subprocess.Popen(
            [sys.executable, str(folder / "server.py"), str(self.log), str(port_file), *args],
            stdout=open(folder / "server.out", "w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        port = wait_for(lambda: port_file.exists() and port_file.read_text().strip(), 60, "the server's port",
                        self.proc)
        self.url = f"http://127.0.0.1:{port}"

    def log_lines(self) -> list[list[str]]:
        return [line.split() for line in self.log.read_text().splitlines() if line.strip()]

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 9)
        self.proc.wait(timeout=30)


@pytest.fixture
def s3(tmp_path, monkeypatch):
    pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install 'daskmeans[test]')")
    pytest.importorskip("s3fs", reason="s3fs is not installed (pip install 'daskmeans[test]')")
    srv = Server(tmp_path / "s3", S3_SERVER)
    # This process is "the client": its requests carry this key; the workers get another.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "client-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(endpoint_url=srv.url)
    fs.mkdir("bucket")
    with dask.config.set({"daskmeans.storage-options": {"endpoint_url": srv.url}}):
        yield srv
    s3fs.S3FileSystem.clear_instance_cache()
    srv.stop()


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two workers whose S3 key differs from the client's."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID="worker-key", AWS_SECRET_ACCESS_KEY="secret",
               AWS_DEFAULT_REGION="us-east-1", PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    yield from two_workers(tmp_path / "dask", env=env)


def _expected(tmp_path):
    root = tmp_path / "tree"
    expected = make_image_tree(root)
    return root, expected


def _check(ds, expected, split):
    images, labels = expected[split]
    np.testing.assert_array_equal(ds.images.compute(), images)
    np.testing.assert_array_equal(ds.labels.compute(), labels)


def test_ingest_to_s3_then_workers_read_chunks(tmp_path, s3, cluster):
    from distributed import Client

    root, expected = _expected(tmp_path)
    url = "s3://bucket/cifar10.zarr"
    assert ingest(root, to=url, progress=False) == url
    writes = s3.log_lines()
    assert any(m == "PUT" and CHUNK.search(p) for m, p, _ in writes)
    # Ingest again: the complete store of the same source is reused, nothing written.
    assert ingest(root, to=url, progress=False) == url
    assert not [r for r in s3.log_lines()[len(writes):] if r[0] in ("PUT", "POST", "DELETE")]

    start = len(s3.log_lines())
    with Client(cluster.address) as client:
        worker_pids = set(client.run(os.getpid).values())
        assert os.getpid() not in worker_pids
        for split in ("train", "test"):
            ds = load_cifar10(url, split=split, chunk_size=4, progress=False)
            assert ds.store == url and ds.images.npartitions > 1
            _check(ds, expected, split)
    reads = s3.log_lines()[start:]
    chunk_reads = [(p, key) for m, p, key in reads if m == "GET" and CHUNK.search(p)]
    assert chunk_reads, reads
    # Every chunk was read by a worker (their key); the client read metadata only.
    assert {key for _, key in chunk_reads} == {"worker-key"}, chunk_reads
    client_gets = [p for m, p, key in reads if key == "client-key" and m == "GET"]
    assert client_gets and not [p for p in client_gets if CHUNK.search(p)], client_gets
    assert {p for p in client_gets if not p.endswith("zarr.json")} <= {"/bucket"}, client_gets  # listings


def test_s3_cache_dir_and_refusals(tmp_path, s3):
    root, expected = _expected(tmp_path)
    # A cache given as a URL keeps its stores there (found again on the next load).
    ds = load_cifar10(root, cache_dir="s3://bucket/cache", progress=False)
    assert ds.store.startswith("s3://bucket/cache/stores/tree-") and ds.store.endswith(".zarr")
    _check(ds, expected, "train")
    assert load_cifar10(root, cache_dir="s3://bucket/cache", progress=False).store == ds.store
    # Something else at the target is never overwritten.
    import s3fs

    s3fs.S3FileSystem(endpoint_url=s3.url).pipe("bucket/taken/notes.txt", b"mine")
    with pytest.raises(DataError, match="not empty and not a daskmeans store") as err:
        ingest(root, to="s3://bucket/taken", progress=False)
    assert_one_line(err)
    other = tmp_path / "other"
    make_image_tree(other, seed=5)
    with pytest.raises(DataError, match="already holds another store") as err:
        ingest(other, to=ds.store, progress=False)
    assert_one_line(err)
    # A URL that is not a store, and a bucket that does not exist.
    for url, match in (("s3://bucket/nothing.zarr", "no daskmeans store at this URL"),
                       ("s3://no-such-bucket/x.zarr", "no daskmeans store|cannot read")):
        with pytest.raises(DataError, match=match) as err:
            load_cifar10(url, progress=False)
        assert_one_line(err)


def test_http_store_read_by_workers(tmp_path, cluster):
    pytest.importorskip("aiohttp", reason="aiohttp is not installed (pip install 'daskmeans[test]')")
    from distributed import Client

    root, expected = _expected(tmp_path)
    store = ingest(root, progress=False)
    srv = Server(tmp_path / "http", HTTP_SERVER, str(store.parent))
    try:
        url = f"{srv.url}/{store.name}"
        with dask.config.set({"daskmeans.storage-options": {"get_client": _ident_client()}}), \
                Client(cluster.address) as client:
            worker_pids = {str(p) for p in client.run(os.getpid).values()}
            ds = load_cifar10(url, split="test", chunk_size=4, progress=False)
            assert ds.images.npartitions > 1
            _check(ds, expected, "test")
        lines = srv.log_lines()
        chunk_pids = {pid for m, p, pid in lines if CHUNK.search(p)}
        assert chunk_pids and chunk_pids <= worker_pids, lines
        client_paths = [p for m, p, pid in lines if pid == str(os.getpid())]
        assert client_paths and not [p for p in client_paths if CHUNK.search(p)], client_paths
        # Read-only: no ingest to an http URL.
        with pytest.raises(DataError, match="read-only") as err:
            ingest(root, to=f"{srv.url}/new.zarr", progress=False)
        assert_one_line(err)
    finally:
        srv.stop()


def _ident_client():
    sys.path.insert(0, str(HERE)) if str(HERE) not in sys.path else None
    from _fsspec_ident import get_client

    return get_client


def test_file_url_and_folder_target(tmp_path):
    root, expected = _expected(tmp_path)
    # file:// URLs are local paths, for sources and stores alike.
    ds = load_cifar10(root.as_uri(), split="test", progress=False)
    _check(ds, expected, "test")
    store = ingest(root, to=str(tmp_path / "mine.zarr"), progress=False)
    assert store == tmp_path / "mine.zarr"
    _check(load_cifar10(f"file://{store}", split="train", progress=False), expected, "train")
    with pytest.raises(DataError, match="already exists") as err:
        ingest(root, to=str(tmp_path / "tree"), progress=False)
    assert_one_line(err)


def test_storage_options_must_be_a_mapping(tmp_path):
    from daskmeans.errors import InputError

    with dask.config.set({"daskmeans.storage-options": "endpoint"}):
        with pytest.raises(InputError, match="storage-options") as err:
            load_cifar10("s3://bucket/x.zarr", progress=False)
    assert_one_line(err)


@pytest.mark.slow
def test_cli_ingest_to_url(tmp_path, s3):
    root, expected = _expected(tmp_path)
    env = dict(os.environ, DASKMEANS_CACHE=str(tmp_path / "cache"),
               DASK_DASKMEANS__STORAGE_OPTIONS=json.dumps({"endpoint_url": s3.url}))
    p = subprocess.run([sys.executable, "-m", "daskmeans.cli", "ingest", "-q", "--data", str(root),
                        "--to", "s3://bucket/cli.zarr"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "s3://bucket/cli.zarr" in p.stdout
    _check(load_cifar10("s3://bucket/cli.zarr", split="test", progress=False), expected, "test")
