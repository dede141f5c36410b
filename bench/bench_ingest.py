"""Ingest time of a source into a local store and into an S3-compatible store (moto's server).

    .venv/bin/python bench/bench_ingest.py ../shared/data/cifar10-images.tar.gz

Starts moto's S3 server on 127.0.0.1 (needs ``pip install 'moto[server]' s3fs``), ingests
the source into a fresh local cache and to ``s3://bench/cifar10.zarr``, then reads the
S3 store back (pixel sums compared with the local store). Prints one line per step.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import numpy as np


def start_moto(folder: Path) -> tuple[subprocess.Popen, str]:
    script = folder / "moto_server.py"
    script.write_text(
        "import sys\n"
        "from moto.server import DomainDispatcherApplication, create_backend_app\n"
        "from werkzeug.serving import make_server\n"
        "srv = make_server('127.0.0.1', 0, DomainDispatcherApplication(create_backend_app), threaded=True)\n"
        "open(sys.argv[1], 'w').write(str(srv.server_port))\n"
        "srv.serve_forever()\n"
    )
    port_file = folder / "port"
    proc = subprocess.Popen([sys.executable, str(script), str(port_file)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (port_file.exists() and port_file.read_text().strip()):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("moto server did not start")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port_file.read_text().strip()}"


def main(source: str) -> None:
    from daskmeans.data import ingest, load_cifar10

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        store = ingest(source, cache_dir=tmp / "cache", progress=False)
        print(f"local store: ingested {source} in {time.perf_counter() - t0:.1f} s -> {store}")
        proc, endpoint = start_moto(tmp)
        try:
            import s3fs

            s3fs.S3FileSystem(endpoint_url=endpoint).mkdir("bench")
            with dask.config.set({"daskmeans.storage-options": {"endpoint_url": endpoint}}):
                t0 = time.perf_counter()
                url = ingest(source, cache_dir=tmp / "cache", to="s3://bench/cifar10.zarr", progress=False)
                print(f"moto S3 store: ingested {source} in {time.perf_counter() - t0:.1f} s -> {url}")
                t0 = time.perf_counter()
                remote = load_cifar10(url, split="all", progress=False)
                s_remote = remote.flat().sum(axis=0, dtype=np.int64).compute()
                print(f"moto S3 store: read back {remote.n_samples} images in {time.perf_counter() - t0:.1f} s")
            local = load_cifar10(store, split="all", progress=False)
            same = np.array_equal(s_remote, local.flat().sum(axis=0, dtype=np.int64).compute())
            print(f"S3 store equals the local store (per-pixel sums): {same}")
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/cifar10-images.tar.gz")
