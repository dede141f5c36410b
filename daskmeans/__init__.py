"""daskmeans: k-means for image datasets on chunked Dask arrays (NumPy or CuPy).

>>> from daskmeans import KMeans, load_cifar10
>>> ds = load_cifar10("../shared/data/cifar10-images.tar.gz", split="train")
>>> km = KMeans(10, random_state=0).fit(ds.flat())
"""

__version__ = "0.1.0"

from . import config  # noqa: E402,F401  (registers the packaged defaults with dask.config)
from .errors import DaskmeansError, InputError  # noqa: E402
from .estimator import KMeans  # noqa: E402
from .kmeans import kmeans_plusplus  # noqa: E402


def load_cifar10(*args, **kwargs):
    """Load CIFAR-10 as dask arrays; see :func:`daskmeans.data.load_cifar10`."""
    from .data import load_cifar10 as _load

    return _load(*args, **kwargs)


__all__ = ["KMeans", "kmeans_plusplus", "load_cifar10", "DaskmeansError", "InputError", "__version__"]
