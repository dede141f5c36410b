#!/usr/bin/env python
"""Check a run's report.html the way a reader sees it: offline, in a real headless browser.

    python scripts/check_report.py RUN_DIR [--screenshot OUT.png] [--height 2400]

1. Static checks: the page is self-contained (no http(s) ``src``/``href``, every
   ``<img>`` a ``data:`` URI that decodes to a PNG), and the figures that should
   sit next to report.json are valid PNGs.
2. Renders it with Debian's chromium (``apt-get install -y chromium``) headless,
   with networking features off, into a screenshot (default RUN_DIR/report-screenshot.png;
   look at it with an image viewer).

Exit status 0 when everything holds, 1 otherwise (one line per problem).
"""

from __future__ import annotations

import argparse
import base64
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("centroids.png", "contingency.png", "convergence.png", "samples.png", "nearest.png", "farthest.png")


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
        if not base64.b64decode(m.group(1)).startswith(PNG_MAGIC):
            problems.append("a data: URI that is not a PNG")
    return problems


def screenshot(html_path: Path, out: Path, width: int = 1280, height: int = 2400, timeout: float = 120) -> Path:
    """Render ``html_path`` with headless chromium into ``out`` (PNG)."""
    browser = find_browser()
    if browser is None:
        raise RuntimeError("no chromium found; install it with apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="daskmeans-chromium-") as profile:
        cmd = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
            "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={width},{height}",
            f"--screenshot={out}", html_path.resolve().as_uri(),
        ]
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
        if not f.is_file() or not f.read_bytes().startswith(PNG_MAGIC):
            problems.append(f"missing or invalid {name}")
    out = args.screenshot or (args.run / "report-screenshot.png")
    try:
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
