"""daskmeans: k-means for image datasets on chunked Dask arrays (NumPy or CuPy).

>>> from daskmeans import KMeans, load_cifar10
>>> ds = load_cifar10("../shared/data/cifar10-images.tar.gz", split="train")
>>> km = KMeans(10, random_state=0).fit(ds.flat())
"""

#: The one place the version is written: pyproject.toml reads it from here (setuptools' dynamic version).
__version__ = "0.1.0"

from . import config  # noqa: E402,F401  (registers the packaged defaults with dask.config)
from .errors import DaskmeansError, InputError  # noqa: E402
from .data import load_cifar10  # noqa: E402
from .estimator import KMeans  # noqa: E402
from .minibatch import MiniBatchKMeans  # noqa: E402
from .functions import k_means, kmeans_plusplus  # noqa: E402  (scikit-learn's signatures)


__all__ = ["KMeans", "MiniBatchKMeans", "k_means", "kmeans_plusplus", "load_cifar10", "DaskmeansError", "InputError",
           "__version__"]
