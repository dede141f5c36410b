"""The parameter table: one declaration from which the CLI, Settings, job specs and config derive."""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import dask
import numpy as np
import pytest
import yaml
from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints

from daskmeans import params
from daskmeans.cli import build_parser
from daskmeans.errors import InputError
from daskmeans.run import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_and_flag_is_declared_once():
    # every Settings field is a parameter, with the command line's default
    assert {f.name: f.default for f in fields(Settings)} == params.settings_defaults()
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    dests = {a.dest for a in run._actions} - {"help", "quiet", "json", "debug"}
    assert dests == set(params.settings_defaults())


@pytest.mark.parametrize("name, value, source, expected", [
    ("max_iter", 0, "python", "max_iter=0 must be an integer >= 1; pass max_iter=1 or more"),
    ("max_iter", 0, "cli", "--max-iter 0: must be >= 1; pass --max-iter 1 or more"),
    ("k", 0, "cli", "-k 0: the number of clusters must be >= 1; pass -k 1 or more"),
    ("k", "ten", "spec", "k 'ten' must be a whole number; write k: 1 or more"),
    ("tol", float("nan"), "python", "tol=nan must be a finite number"),
    ("metric", "manhattan", "cli", "--metric 'manhattan' is not one of l2, l1, cosine; pass --metric l2 (or l1, cosine)"),
    ("seed", 2**32, "cli", "--seed 4294967296: the random seed must be between 0 and 4294967295"),
    ("n_clusters", True, "python", "n_clusters=True must be an integer"),
    ("split_every", 1, "python", "split_every=1 must be an integer >= 2"),
    ("init", "kmeans", "python", "init='kmeans' is not k-means++, k-means||, random, uniform or an array of centres"),
])
def test_check_names_value_bound_and_fix(name, value, source, expected):
    with pytest.raises(InputError) as e:
        params.check(name, value, source=source)
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)


@pytest.mark.parametrize("name, value, source, expected", [
    ("tol", "1e-3", "spec", 1e-3),
    ("subset", 100.0, "spec", 100),
    ("max_iter", np.int64(5), "python", 5),
    ("init", "c.npy", "cli", "c.npy"),
    ("chunk_size", None, "python", None),
    ("persist", np.bool_(False), "python", False),
])
def test_check_coerces(name, value, source, expected):
    got = params.check(name, value, source=source)
    assert got == expected and type(got) is type(expected)


def test_sklearn_constraints_agree_with_check():
    cons = params.sklearn_constraints(params.ESTIMATOR)
    assert set(cons) == set(params.ESTIMATOR)
    good = {n: params.PARAMS[n].default for n in params.ESTIMATOR}
    validate_parameter_constraints(cons, good, caller_name="KMeans")
    for name, bad in [("max_iter", 0), ("tol", -1.0), ("metric", "manhattan"), ("algorithm", "kd-tree"), ("oversampling_factor", 0.0),
                      ("n_clusters", 0), ("split_every", 1)]:
        with pytest.raises(InputError):
            params.check(name, bad)
        with pytest.raises(InvalidParameterError):
            validate_parameter_constraints(cons, {**good, name: bad}, caller_name="KMeans")


def test_algorithm_default_is_auto_everywhere():
    assert params.PARAMS["algorithm"].default == "auto" and params.default("algorithm") == "auto"
    p = argparse.ArgumentParser()
    params.add_arguments(p, ["algorithm"])
    assert p.parse_args([]).algorithm is None  # resolved from the config when the settings are checked
    s = Settings()
    s.validate()
    assert s.algorithm == "auto"


def _yaml_keys(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict) and v and k != "profiles":
            yield from _yaml_keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def test_every_packaged_config_key_is_read():
    data = yaml.safe_load((ROOT / "daskmeans" / "daskmeans.yaml").read_text())["daskmeans"]
    keys = set(_yaml_keys(data))
    declared = {p.config_key for p in params.PARAMS.values() if p.config_key}
    # keys not in the parameter table, each read by the named module
    elsewhere = {"cache-dir": "config.cache_dir", "download.url": "data.fetch", "download.timeout": "data.fetch",
                 "scheduler.connect-timeout": "connect", "cluster.profiles": "profiles",
                 "storage-options": "data.store", "direct-passes": "placement"}
    assert "download.md5" not in keys  # the archive's checksum is a constant, never configurable away
    assert keys == declared | set(elsewhere), keys ^ (declared | set(elsewhere))
    src = {p.stem: p.read_text() for p in (ROOT / "daskmeans").rglob("*.py")}
    for key in elsewhere:
        assert any(f'"{key}"' in text for text in src.values()), key


@pytest.mark.parametrize("name, key, value, expected", [
    ("max_iter", "kmeans.max-iter", 7, 7),
    ("tol", "kmeans.tol", "1e-3", 1e-3),
    ("metric", "kmeans.metric", "l1", "l1"),
    ("init", "kmeans.init", "random", "random"),
    ("algorithm", "kmeans.algorithm", "lloyd", "lloyd"),
    ("split_every", "kmeans.split-every", 4, 4),
    ("chunk_size", "chunk-size", 100, 100),
])
def test_config_changes_the_default(name, key, value, expected):
    with dask.config.set({f"daskmeans.{key}": value}):
        assert params.default(name) == expected
        s = Settings()
        s.validate()
        field = params.get(name).setting
        if hasattr(s, field) and name != "chunk_size":
            assert getattr(s, field) == expected


def test_bad_config_value_names_the_key():
    with dask.config.set({"daskmeans.kmeans.split-every": "abc"}):
        with pytest.raises(InputError, match=r"config daskmeans.kmeans.split-every='abc' .* must be a whole number"):
            Settings().validate()


def test_environment_variable_reaches_the_run_settings():
    code = "from daskmeans.run import Settings; s = Settings(); s.validate(); print(s.max_iter, s.metric)"
    env = {"DASK_DASKMEANS__KMEANS__MAX_ITER": "7", "DASK_DASKMEANS__KMEANS__METRIC": "l1", "PATH": "/usr/bin"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["7", "l1"]
