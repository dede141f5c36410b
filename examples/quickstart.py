"""From the CIFAR-10 images to the pictures of the clusters, in a notebook or a terminal.

    python examples/quickstart.py          # writes quickstart-figures/*.png

Every ``# %%`` line starts a cell: Jupyter (with Jupytext), VS Code and PyCharm
open this file as a notebook, where each figure displays inline as the last
expression of a cell. Settings come from the environment so the same file runs
unchanged in both places: ``DASKMEANS_DATA`` (the images; default
``../shared/data/cifar10-images.tar.gz``), ``QUICKSTART_N`` (images to cluster,
default 5000), ``QUICKSTART_OUT`` (folder for the PNG files).
"""

# %%
import os
from pathlib import Path

from daskmeans import KMeans, load_cifar10, report

DATA = os.environ.get("DASKMEANS_DATA", "../shared/data/cifar10-images.tar.gz")
N = int(os.environ.get("QUICKSTART_N", "5000"))
OUT = Path(os.environ.get("QUICKSTART_OUT", "quickstart-figures"))

# %% The ten lines: data, fit, the cluster x class table, the members of each cluster, the figures
ds = load_cifar10(DATA, split="train")
ds = ds.subset(min(N, ds.n_samples), seed=0)
km = KMeans(10, random_state=0).fit(ds.flat())
table = report.contingency_of(km, ds)  # (10 clusters, 10 classes) counts, computed on the workers
ex = report.gather_examples(ds.flat(), km.labels_, ds.labels, km.cluster_centers_)
centers = report.plot_centers(km, ds.class_names, table=table)
contingency = report.plot_contingency(table, ds.class_names)
convergence = report.plot_convergence(km)
nearest = report.plot_examples(ex, "nearest", ds.class_names, table=table)

# %% In a notebook, a figure shows by itself: ``centers`` alone in a cell. Here, save them all.
OUT.mkdir(parents=True, exist_ok=True)
for name, fig in {"centers": centers, "contingency": contingency, "convergence": convergence,
                  "nearest": nearest}.items():
    fig.savefig(OUT / f"{name}.png")
    print(f"wrote {OUT / name}.png")
print(f"{ds.n_samples} images, {km.n_iter_} iterations, purity {table.max(axis=1).sum() / table.sum():.3f}")
