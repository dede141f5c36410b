"""Cluster profiles (cluster.yaml through dask.config), who may connect, what gets closed.

Real clusters here listen on 127.0.0.1 only; nothing sends traffic anywhere else.
"""

from __future__ import annotations

import copy
import importlib.machinery
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path
from urllib.parse import urlparse

import dask
import distributed  # noqa: F401  (its config defaults are registered before the snapshots below)
import psutil
import pytest
import yaml

from daskmeans import profiles
from daskmeans.cli import main
from daskmeans.cluster import scheduler
from daskmeans.errors import ClusterUnreachable, InputError
from helpers_dask import DaskProcesses, wait_for

ROOT = Path(__file__).resolve().parents[1]
USER_DASK_CONFIG = Path("~/.config/dask").expanduser()


def _snapshot(folder: Path):
    if not folder.exists():
        return None
    return sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.fixture(autouse=True)
def isolated_config(monkeypatch):
    """Each test gets dask.config back as it was, and the user's dask config is never written."""
    before = _snapshot(USER_DASK_CONFIG)
    saved = copy.deepcopy(dask.config.config)
    monkeypatch.setattr(profiles, "_loaded", None)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    dask.config.refresh()  # defaults + dask's files + environment: nothing an earlier test merged in
    yield
    dask.config.config.clear()
    dask.config.config.update(saved)
    profiles._loaded = None
    assert _snapshot(USER_DASK_CONFIG) == before, "a test wrote to the user's dask config"


def write_config(tmp_path, monkeypatch, profs: dict, **extra) -> Path:
    p = tmp_path / "cluster.yaml"
    p.write_text(yaml.safe_dump({"daskmeans": {"cluster": {"profiles": profs}, **extra}}))
    monkeypatch.setenv(profiles.ENV_VAR, str(p))
    return p


# -- cluster.yaml ---------------------------------------------------------------------------


def test_shipped_cluster_yaml_has_every_kind_and_comments():
    text = (ROOT / "cluster.yaml").read_text()
    data = yaml.safe_load(text)
    profs = data["daskmeans"]["cluster"]["profiles"]
    assert {"threads", "local", "address", "local-cuda", "jobqueue-slurm", "kubernetes"} <= set(profs)
    assert {p["kind"] for p in profs.values()} == set(profiles.KINDS)
    for name, prof in profs.items():
        if prof["kind"] not in profiles.OPTIONAL and "tls" not in prof:
            profiles.validate_profile(name, prof)  # the examples are valid profiles
    # every key line carries a comment
    for line in text.splitlines():
        s = line.strip()
        if s and not s.startswith("#") and ":" in s and not s.endswith(":") and s.split(":")[0] not in ("daskmeans",):
            assert "#" in s, f"uncommented key: {line}"
    assert profs["local"]["host"] == "127.0.0.1" and profs["local"]["dashboard-address"].startswith("127.0.0.1:")
    slurm = profs["jobqueue-slurm"]
    assert slurm["protocol"] == "tls://" and set(slurm["tls"]) == {"ca-file", "cert", "key"}


def test_cluster_yaml_goes_through_dask_config_with_env_on_top(tmp_path, monkeypatch):
    write_config(tmp_path, monkeypatch, {"mine": {"kind": "local", "n-workers": 1}}, **{"chunk-size": 1234})
    # a value from the user's own dask config (simulated in memory) is overridden by cluster.yaml ...
    dask.config.update(dask.config.config, {"daskmeans": {"cluster": {"profiles": {"mine": {"n-workers": 7}}}}})
    assert profiles.get_profile("mine")["n-workers"] == 1
    assert dask.config.get("daskmeans.chunk-size") == 1234  # any dask setting may live there
    # ... and DASK_* environment variables beat both, as dask users expect
    monkeypatch.setenv("DASK_DASKMEANS__CLUSTER__PROFILES__MINE__N_WORKERS", "3")
    assert profiles.get_profile("mine")["n-workers"] == 3
    assert profiles.get_profile("threads")["kind"] == "threads"  # packaged profiles stay


def test_default_config_file_is_cluster_yaml_in_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(profiles.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert profiles.config_files() == []
    (tmp_path / "cluster.yaml").write_text("daskmeans: {cluster: {profiles: {here: {kind: threads}}}}\n")
    assert profiles.config_files() == [Path("cluster.yaml")]
    assert profiles.get_profile("here") == {"kind": "threads"}


@pytest.mark.parametrize("prof, needle", [
    ({"kind": "warp-drive"}, "kind 'warp-drive' is not one of threads, local, address"),
    ({"kind": "local", "n-wrokers": 2}, "unknown key(s) n-wrokers"),
    ({"kind": "address"}, "exactly one of address"),
    ({"kind": "address", "address": "tcp://127.0.0.1:1", "scheduler-file": "x.json"}, "exactly one of address"),
    ({"kind": "address", "address": "carrier-pigeon"}, "is not one of threads, local or tcp://"),
    ({"kind": "address", "address": "tls://127.0.0.1:8786"}, "needs TLS settings: add tls"),
    ({"kind": "jobqueue", "system": "slurm", "protocol": "tls://"}, "needs TLS settings"),
    ({"kind": "jobqueue", "system": "cron"}, "system 'cron' is not one of slurm"),
    ({"kind": "local", "n-workers": -1}, "n-workers -1 must be a whole number"),
])
def test_bad_profiles_are_refused_with_the_fix(prof, needle, tmp_path, monkeypatch):
    if prof["kind"] == "jobqueue":  # pretend it is installed: the check is about the profile itself
        _fake_module(monkeypatch, "dask_jobqueue")
    write_config(tmp_path, monkeypatch, {"bad": prof})
    with pytest.raises(InputError) as e:
        profiles.get_profile("bad")
    assert needle in str(e.value) and "'bad'" in str(e.value)


def test_tls_settings_must_name_existing_files_and_a_tls_address(tmp_path, monkeypatch):
    tls = {"ca-file": str(tmp_path / "ca.pem"), "cert": str(tmp_path / "c.pem"), "key": str(tmp_path / "c.key")}
    write_config(tmp_path, monkeypatch, {"s": {"kind": "address", "address": "tls://127.0.0.1:8786", "tls": tls}})
    with pytest.raises(InputError, match="tls ca-file .*ca.pem: no such file"):
        profiles.get_profile("s")
    for f in tls.values():
        Path(f).write_text("x")
    with pytest.raises(InputError, match=r"tls key .*c.key is readable by others \(mode 644\); run: chmod 600"):
        profiles.get_profile("s")
    os.chmod(tls["key"], 0o600)
    assert profiles.get_profile("s")["tls"] == tls
    write_config(tmp_path, monkeypatch, {"s": {"kind": "address", "address": "tcp://127.0.0.1:8786", "tls": tls}})
    with pytest.raises(InputError, match="is not a tls:// address"):
        profiles.get_profile("s")


def test_bare_tls_scheduler_without_certificates_is_refused(capsys):
    code = main(["run", "--scheduler", "tls://127.0.0.1:8786", "-k", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "a tls:// scheduler needs certificates" in err and len(err.strip().splitlines()) == 1


def test_unknown_profile_cli_one_line_status_2(tmp_path, monkeypatch, capsys):
    write_config(tmp_path, monkeypatch, {"mine": {"kind": "threads"}})
    code = main(["run", "--cluster", "nope", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--cluster 'nope': no such profile (known: local, mine, threads" in err
    assert not (tmp_path / "o").exists()
    code = main(["run", "--cluster", "mine", "--scheduler", "local"])
    assert code == 2 and "give one of them, not both" in capsys.readouterr().err


# -- optional backends --------------------------------------------------------------------


def test_optional_backends_are_not_imported_unless_used():
    code = ("import sys, daskmeans.cli, daskmeans.profiles, daskmeans.jobs, daskmeans.cluster; "
            "daskmeans.cli.build_parser(); daskmeans.profiles.get_profile('local'); "
            "print([m for m in sys.modules if m.split('.')[0] in ('dask_cuda', 'dask_jobqueue', 'dask_kubernetes')])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("kind, extra, dist, prof", [
    ("local-cuda", "cuda", "dask-cuda", {}),
    ("jobqueue", "jobqueue", "dask-jobqueue", {"system": "slurm"}),
    ("kubernetes", "kubernetes", "dask-kubernetes", {}),
])
def test_missing_backend_names_the_extra(kind, extra, dist, prof, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, profiles.OPTIONAL[kind][0].split(".")[0], None)  # as if not installed
    write_config(tmp_path, monkeypatch, {"p": {"kind": kind, **prof}})
    code = main(["run", "--cluster", "p", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"needs {dist}, which is not installed" in err and f"pip install 'daskmeans[{extra}]'" in err
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith(dist) for dep in extras[extra])


def _fake_module(monkeypatch, name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for k, v in attrs.items():
        setattr(mod, k, v)
    monkeypatch.setitem(sys.modules, name, mod)
    return mod


def test_jobqueue_profile_starts_on_loopback_scales_and_closes(tmp_path, monkeypatch):
    """A stand-in SLURMCluster (a LocalCluster that records its arguments): no batch system needed."""
    from distributed import LocalCluster

    seen = {}

    class SLURMCluster(LocalCluster):
        def __init__(self, **kw):
            seen["kwargs"] = kw
            so = kw["scheduler_options"]
            super().__init__(n_workers=0, processes=False, protocol="tcp://", host=so["host"],
                             dashboard_address=so["dashboard_address"])

        def scale(self, n=None, **kw):
            seen.setdefault("scale", []).append(n)
            return super().scale(n)

        def close(self, *a, **k):
            seen["closed"] = True
            return super().close(*a, **k)

    _fake_module(monkeypatch, "dask_jobqueue", SLURMCluster=SLURMCluster)
    write_config(tmp_path, monkeypatch, {"hpc": {"kind": "jobqueue", "system": "slurm", "cores": 4, "memory": "8GiB",
                                                 "queue": "short", "walltime": "00:10:00", "n-workers": 1}})
    with scheduler(cluster="hpc") as info:
        assert info["kind"] == "jobqueue" and info["profile"] == "hpc"
        assert urlparse(info["address"]).hostname == "127.0.0.1"
        assert info["client"].submit(lambda x: x + 1, 1).result(timeout=30) == 2
    kw = seen["kwargs"]
    assert kw["cores"] == 4 and kw["memory"] == "8GiB" and kw["queue"] == "short" and kw["walltime"] == "00:10:00"
    assert kw["scheduler_options"] == {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
    assert 1 in seen["scale"] and seen["closed"]


def test_jobqueue_tls_profile_builds_a_secured_cluster(tls_files, tmp_path, monkeypatch):
    seen = {}

    class SLURMCluster:
        def __init__(self, **kw):
            seen.update(kw)

        def scale(self, n):
            pass

        def close(self):
            pass

    _fake_module(monkeypatch, "dask_jobqueue", SLURMCluster=SLURMCluster)
    prof = {"kind": "jobqueue", "system": "slurm", "interface": "ib0", "protocol": "tls://", "tls": tls_files}
    profiles._start_cluster("hpc", profiles.validate_profile("hpc", prof), None)
    assert seen["protocol"] == "tls://" and seen["interface"] == "ib0"
    sec = seen["security"]
    assert sec.require_encryption and sec.tls_ca_file == tls_files["ca-file"]
    assert sec.tls_scheduler_cert == sec.tls_worker_cert == sec.tls_client_cert == tls_files["cert"]
    assert "host" not in seen["scheduler_options"]  # the profile said: listen on ib0
    assert seen["scheduler_options"]["dashboard_address"] == "127.0.0.1:0"


def test_kubernetes_profile_passes_its_settings(tmp_path, monkeypatch):
    seen = {}

    class KubeCluster:
        def __init__(self, **kw):
            seen.update(kw)

    _fake_module(monkeypatch, "dask_kubernetes")
    _fake_module(monkeypatch, "dask_kubernetes.operator", KubeCluster=KubeCluster)
    prof = {"kind": "kubernetes", "name": "dm", "image": "img:1", "n-workers": 3, "resources": {"limits": {"cpu": "2"}}}
    profiles._start_cluster("k", profiles.validate_profile("k", prof), None)
    assert seen == {"name": "dm", "image": "img:1", "n_workers": 3, "resources": {"limits": {"cpu": "2"}}}


# -- who gets in: loopback only ------------------------------------------------------------


def _listening(proc: psutil.Process) -> set:
    return {(c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


@pytest.mark.distributed
def test_local_cluster_binds_scheduler_and_dashboard_to_loopback_and_is_closed(tmp_path, monkeypatch):
    write_config(tmp_path, monkeypatch, {"loc": {"kind": "local", "n-workers": 1, "threads-per-worker": 1}})
    me = psutil.Process()
    before = _listening(me)
    with scheduler(cluster="loc") as info:
        sched = urlparse(info["address"])
        dash = urlparse(info["dashboard"])
        # the addresses the cluster reports ...
        assert sched.scheme == "tcp" and sched.hostname == "127.0.0.1"
        assert dash.hostname == "127.0.0.1"
        # ... and the sockets actually listening (scheduler and dashboard here, the worker a child process)
        mine = _listening(me) - before
        assert ("127.0.0.1", sched.port) in mine and ("127.0.0.1", dash.port) in mine
        worker_pids = list(info["client"].run(os.getpid).values())
        assert len(worker_pids) == 1 and worker_pids[0] != os.getpid()  # a separate process
        socks = mine | {s for pid in worker_pids for s in _listening(psutil.Process(pid))}
        assert {ip for ip, _ in socks} == {"127.0.0.1"}, socks
    # closed on exit: the run started it
    wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                             for p in worker_pids), 30, "the worker processes to end")
    assert ("127.0.0.1", sched.port) not in _listening(me)


@pytest.fixture(scope="module")
def remote_scheduler(tmp_path_factory):
    """A real `dask scheduler` on 127.0.0.1 that the runs connect to (and must not close)."""
    procs = DaskProcesses(tmp_path_factory.mktemp("sched"))
    procs.start_scheduler()
    yield procs
    procs.stop()


@pytest.mark.distributed
def test_address_profile_connects_and_leaves_the_scheduler_running(remote_scheduler, tmp_path, monkeypatch):
    write_config(tmp_path, monkeypatch, {
        "there": {"kind": "address", "address": remote_scheduler.address},
        "by-file": {"kind": "address", "scheduler-file": str(remote_scheduler.scheduler_file)},
    })
    for name in ("there", "by-file"):
        with scheduler(cluster=name) as info:
            assert info["address"] == remote_scheduler.address and info["kind"] == "address"
            assert info["client"].scheduler_info()["address"] == remote_scheduler.address
        assert info["client"].status == "closed"
        assert remote_scheduler.scheduler.poll() is None, "a run must not close a cluster it did not start"


@pytest.mark.distributed
def test_dask_scheduler_address_is_honoured_when_no_profile_is_named(remote_scheduler, monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", remote_scheduler.address)
    dask.config.refresh()  # as a fresh process would read it
    with scheduler() as info:
        assert info["kind"] == "address" and info["address"] == remote_scheduler.address
    with scheduler("threads") as info:  # an explicit choice wins
        assert info["kind"] == "threads"
    with scheduler(cluster="threads") as info:
        assert info["kind"] == "threads" and info["client"] is None


def test_unreachable_profile_is_bounded(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    write_config(tmp_path, monkeypatch, {
        "gone": {"kind": "address", "address": f"tcp://127.0.0.1:{port}", "connect-timeout": 2},
        "nofile": {"kind": "address", "scheduler-file": str(tmp_path / "absent.json"), "connect-timeout": 1},
    })
    for name, needle in (("gone", "could not reach the Dask scheduler"), ("nofile", "no scheduler file")):
        t0 = time.monotonic()
        with pytest.raises(ClusterUnreachable, match=needle):
            with scheduler(cluster=name):
                pass
        assert time.monotonic() - t0 < 20


# -- TLS: certificates generated here ---------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict:
    """A throwaway CA and one certificate for 127.0.0.1 signed by it (PEM), made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot generate test certificates")
    d = tmp_path_factory.mktemp("tls")

    def ssl(*args):
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=daskmeans-test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "node.pem",
        "-days", "1", "-extfile", "ext.cnf")
    os.chmod(d / "node.key", 0o600)
    return {"ca-file": str(d / "ca.pem"), "cert": str(d / "node.pem"), "key": str(d / "node.key")}


@pytest.mark.distributed
def test_tls_profile_builds_a_secured_client(tls_files, tmp_path, monkeypatch):
    procs = DaskProcesses(tmp_path / "tls-sched")
    try:
        addr = procs.start_scheduler("--protocol", "tls", "--tls-ca-file", tls_files["ca-file"],
                                     "--tls-cert", tls_files["cert"], "--tls-key", tls_files["key"])
        assert addr.startswith("tls://127.0.0.1:")
        write_config(tmp_path, monkeypatch, {"secure": {"kind": "address", "address": addr, "tls": tls_files,
                                                        "connect-timeout": 5}})
        with scheduler(cluster="secure") as info:
            client = info["client"]
            assert client.security.require_encryption
            assert client.security.tls_ca_file == tls_files["ca-file"]
            assert client.security.tls_client_cert == tls_files["cert"]
            assert client.scheduler.address.startswith("tls://127.0.0.1:")
            assert client.scheduler_info()["address"] == addr  # a round trip over TLS
        # the same scheduler without the certificates: refused before any connection
        write_config(tmp_path, monkeypatch, {"naked": {"kind": "address", "address": addr}})
        with pytest.raises(InputError, match="needs TLS settings"):
            with scheduler(cluster="naked"):
                pass
    finally:
        procs.stop()
