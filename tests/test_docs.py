"""The documentation site builds with warnings as errors, and every public name has its page.

Needs the ``docs`` extra (``pip install -e '.[docs]'``); skips without it. ``.ci/run`` installs
the extra and runs this file after the main suite.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import daskmeans

pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'")
pytest.importorskip("myst_parser", reason="the docs extra is not installed: pip install -e '.[docs]'")
pytest.importorskip("numpydoc", reason="the docs extra is not installed: pip install -e '.[docs]'")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

pytestmark = pytest.mark.docs


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           str(DOCS), str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, f"sphinx-build -W failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return out


@pytest.mark.parametrize("name", daskmeans.__all__)
def test_every_public_name_has_a_rendered_page(site, name):
    page = site / "generated" / f"daskmeans.{name}.html"
    assert page.is_file(), f"no API page for daskmeans.{name}: list it in docs/api.md"
    assert f'id="daskmeans.{name}"' in page.read_text(), f"{page.name} does not document daskmeans.{name}"


def test_every_guide_page_is_rendered_and_linked_from_the_index(site):
    index = (site / "index.html").read_text()
    for md in sorted(DOCS.glob("*.md")):
        if md.stem == "index":
            continue
        assert (site / f"{md.stem}.html").is_file(), md.name
        assert f'href="{md.stem}.html' in index, f"the index does not link {md.stem}.html"


def test_every_image_and_local_link_resolves(site):
    broken = []
    for page in site.rglob("*.html"):
        text = page.read_text()
        for kind, target in re.findall(r'<(img|a)\b[^>]*?(?:src|href)="([^"#]+)', text):
            if re.match(r"^[a-z]+:", target) or target.startswith("//"):
                continue  # external or data: URL
            if not (page.parent / target).resolve().exists():
                broken.append(f"{page.relative_to(site)}: {kind} {target}")
    assert not broken, broken
    assert (site / "_images" / "centroids.png").stat().st_size > 1000
