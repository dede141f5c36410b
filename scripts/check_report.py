#!/usr/bin/env python
"""Check a run's report.html the way a reader sees it: offline, in a real headless browser.

    python scripts/check_report.py RUN_DIR [--screenshot OUT.png] [--height 2400]

1. Static checks: the page is self-contained (no http(s) ``src``/``href``, every
   ``<img>`` a ``data:`` URI holding a PNG that Pillow decodes to the last pixel),
   and the figures that should sit next to report.json decode too.
2. Opens it with Debian's chromium (``apt-get install -y chromium``) headless,
   with networking features off: every ``<img>`` must load and decode in the
   browser (checked on a copy of the page with a small script added; the
   report itself has none), and a screenshot is written (default
   RUN_DIR/report-screenshot.png; look at it with an image viewer).

Exit status 0 when everything holds, 1 otherwise (one line per problem).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("centroids.png", "contingency.png", "convergence.png", "samples.png", "nearest.png", "farthest.png")

#: Added to a copy of the page: once every image has loaded (or failed), record on <body> those
#: the browser could not decode (an image that fails to decode has no natural width).
_PROBE = """<script>
window.addEventListener("load", () => {
  const ims = [...document.images];
  const bad = ims.map((im, i) => (im.complete && im.naturalWidth > 0 ? -1 : i)).filter((i) => i >= 0);
  document.body.setAttribute("data-broken", JSON.stringify(bad));
  document.body.setAttribute("data-checked", String(ims.length));
});
</script>"""


#: Headless, and no network traffic of the browser's own (updates, sync, first-run pages).
_QUIET_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions")


def find_browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def static_problems(page: str) -> list[str]:
    """Problems that make the page depend on anything but itself."""
    problems = []
    for attr, url in re.findall(r'(src|href)\s*=\s*["\']?\s*((?:https?:)?//[^"\' >]*)', page, flags=re.I):
        problems.append(f"external {attr}: {url}")
    if re.search(r"url\(\s*['\"]?(?:https?:)?//", page, flags=re.I):
        problems.append("external url() in CSS")
    imgs = re.findall(r"<img\b[^>]*>", page, flags=re.I)
    if not imgs:
        problems.append("no <img> at all")
    for tag in imgs:
        m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', tag)
        if not m:
            problems.append(f"<img> without a data:image/png URI: {tag[:80]}")
            continue
        error = png_error(base64.b64decode(m.group(1)))
        if error:
            problems.append(f"<img> ({_alt(tag)}): {error}")
    return problems


def png_error(data: bytes) -> str | None:
    """Why ``data`` is not a PNG that decodes to the last pixel, or None when it is one."""
    if not data.startswith(PNG_MAGIC):
        return "not a PNG"
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # decodes every pixel: a truncated or corrupt stream fails here
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ... on bad data
        return f"the PNG does not decode ({type(e).__name__}: {e})"
    return None


def browser_problems(html_path: Path, timeout: float = 120) -> list[str]:
    """Images of the page that headless chromium cannot load or decode (one line each)."""
    browser = find_browser()
    if browser is None:
        raise RuntimeError("no chromium found; install it with apt-get install -y chromium")
    page = html_path.read_text(encoding="utf-8")
    end = page.rfind("</body>")
    probe = page[:end] + _PROBE + page[end:] if end >= 0 else page + _PROBE
    with tempfile.TemporaryDirectory(prefix="daskmeans-chromium-") as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(probe, encoding="utf-8")
        cmd = [browser, *_QUIET_FLAGS, f"--user-data-dir={tmp}/profile", "--virtual-time-budget=10000",
               "--dump-dom", copy.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    body = re.search(r"<body\b[^>]*>", proc.stdout)
    broken = re.search(r'data-broken="([^"]*)"', body.group(0)) if body else None
    if broken is None:
        return [f"the browser did not finish loading the page (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"]
    tags = re.findall(r"<img\b[^>]*>", page, flags=re.I)
    return [f"image {i + 1} of {len(tags)} ({_alt(tags[i]) if i < len(tags) else '?'}) does not decode in the browser"
            for i in json.loads(html.unescape(broken.group(1)))]


def _alt(tag: str) -> str:
    m = re.search(r'alt="([^"]*)"', tag)
    return html.unescape(m.group(1)) if m else "no alt text"


def screenshot(html_path: Path, out: Path, width: int = 1280, height: int = 2400, timeout: float = 120) -> Path:
    """Render ``html_path`` with headless chromium into ``out`` (PNG)."""
    browser = find_browser()
    if browser is None:
        raise RuntimeError("no chromium found; install it with apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="daskmeans-chromium-") as profile:
        cmd = [browser, *_QUIET_FLAGS, "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--window-size={width},{height}", f"--screenshot={out}", html_path.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not out.is_file() or not out.read_bytes().startswith(PNG_MAGIC):
        raise RuntimeError(f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run folder holding report.html")
    ap.add_argument("--screenshot", type=Path, help="where to write the screenshot (default RUN/report-screenshot.png)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=2400)
    args = ap.parse_args(argv)
    page_path = args.run / "report.html"
    if not page_path.is_file():
        print(f"check_report: {page_path}: no such file; pass a run folder written by daskmeans run", file=sys.stderr)
        return 1
    page = page_path.read_text(encoding="utf-8")
    problems = static_problems(page)
    for name in FIGURES:
        f = args.run / name
        error = png_error(f.read_bytes()) if f.is_file() else "missing"
        if error:
            problems.append(f"{name}: {error}")
    out = args.screenshot or (args.run / "report-screenshot.png")
    try:
        problems += browser_problems(page_path)
        screenshot(page_path, out, args.width, args.height)
        print(f"screenshot: {out}")
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        problems.append(f"browser: {e}")
    n_img = len(re.findall(r"<img\b", page, flags=re.I))
    print(f"{page_path}: {len(page) / 1024:.0f} kB, {n_img} embedded images, {len(problems)} problem(s)")
    for p in problems:
        print(f"problem: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
