"""The package metadata tells the truth: Python version, build requirement, version, dependencies."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

import daskmeans

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: Import name -> distribution, for optional dependencies that need not be installed to run the tests.
OPTIONAL = {"cupy": "cupy-cuda12x", "tensorflow": "tensorflow", "dask_cuda": "dask-cuda",
            "dask_jobqueue": "dask-jobqueue", "dask_kubernetes": "dask-kubernetes", "bokeh": "bokeh"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = PYPROJECT["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {_norm(Requirement(r).name) for r in reqs}


def _top_level_imports(folder: Path) -> set[str]:
    """First component of every absolute import in ``folder``'s Python files, and of import_module("...")."""
    names = set()
    for f in folder.rglob("*.py"):
        text = f.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        names |= {m.split(".")[0] for m in re.findall(r"import_module\(\s*[\"']([\w.]+)[\"']", text)}
    return names


def test_every_import_of_the_package_is_a_declared_dependency():
    stdlib = set(sys.stdlib_module_names)
    dists = importlib.metadata.packages_distributions()
    declared = _declared() | {"dask"}  # dask[array] is declared as "dask"
    missing = []
    for name in sorted(_top_level_imports(ROOT / "daskmeans") - stdlib - {"daskmeans"}):
        candidates = {_norm(d) for d in dists.get(name, [])} | ({_norm(OPTIONAL[name])} if name in OPTIONAL else set())
        if not candidates:
            missing.append(f"{name} (not installed, and not in OPTIONAL of this test)")
        elif not candidates & declared:
            missing.append(f"{name} (from {', '.join(sorted(candidates))})")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_requires_python_and_build_requirement_are_true():
    # zarr 3 (a dependency) needs Python 3.11; license = "BSD-3-Clause" (an SPDX expression) needs setuptools 77
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert PYPROJECT["project"]["license"] == "BSD-3-Clause"
    build = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    setuptools = next(r for r in build if r.name == "setuptools")
    assert not setuptools.specifier.contains("76.9") and setuptools.specifier.contains("77.0")


def test_one_source_for_the_version():
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "daskmeans.__version__"}
    assert importlib.metadata.version("daskmeans") == daskmeans.__version__


def test_python_dash_m_daskmeans_and_py_typed():
    out = subprocess.run([sys.executable, "-m", "daskmeans", "--version"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == f"daskmeans {daskmeans.__version__}", out
    assert (ROOT / "daskmeans" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["daskmeans"]


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"Set up and run the tests.*?```bash\n(.+?)\n```", readme, flags=re.S)
    assert block, "README's 'Set up and run the tests' block is gone"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert block.group(1).strip() in [line.strip() for line in ci]
