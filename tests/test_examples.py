"""examples/ run as a reader would run them, on a small subset of the real CIFAR-10 images."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.data


def _small_tree(tarball: Path, dest: Path, per_class: int) -> Path:
    """The first ``per_class`` training JPEGs of each class, copied unchanged into an image-folder tree."""
    taken: dict[str, int] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] != "train":
                continue
            if taken.get(parts[1], 0) >= per_class:
                continue
            taken[parts[1]] = taken.get(parts[1], 0) + 1
            out = dest / "train" / parts[1] / parts[2]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tar.extractfile(member).read())
    assert len(taken) == 10 and set(taken.values()) == {per_class}
    return dest


def test_quickstart_goes_from_the_images_to_the_pictures(real_data, tmp_path):
    tree = _small_tree(real_data, tmp_path / "cifar-small", per_class=30)
    env = {**os.environ, "DASKMEANS_DATA": str(tree), "DASKMEANS_CACHE": str(tmp_path / "cache"),
           "QUICKSTART_N": "300", "QUICKSTART_OUT": str(tmp_path / "figures"), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r"^300 images, (\d+) iterations, purity ([0-9.]+)$", proc.stdout, flags=re.M)
    assert m, proc.stdout
    assert float(m.group(2)) > 0.15  # ten classes: chance is 0.1; raw pixels of 300 images do better
    for name, min_size in {"centers": (600, 150), "contingency": (400, 300), "convergence": (600, 250),
                           "nearest": (400, 600)}.items():
        with Image.open(io.BytesIO((tmp_path / "figures" / f"{name}.png").read_bytes())) as im:
            im.load()
            assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1], (name, im.size)


def test_quickstart_is_about_ten_lines():
    src = (ROOT / "examples" / "quickstart.py").read_text()
    cell = src.split("# %% The ten lines")[1].split("# %%")[0]
    code = [line for line in cell.splitlines()[1:] if line.strip() and not line.lstrip().startswith("#")]
    assert len(code) <= 10, code
