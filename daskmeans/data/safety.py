"""Guards for reading untrusted archives: a restricted unpickler and tar member checks.

CIFAR-10's official batches are pickles, and pickles can run arbitrary code; a
downloaded or user-supplied archive is therefore treated as hostile. Archives are
never extracted to disk: members are read in memory, and any member that could
escape a folder or point elsewhere (absolute names, ``..``, links, devices) is
refused outright.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import posixpath
import tarfile
import zlib

import numpy as np

from ..errors import DataError

__all__ = [
    "ALLOWED_GLOBALS",
    "MAX_MEMBER_BYTES",
    "RestrictedUnpickler",
    "check_member",
    "iter_tar_members",
    "safe_loads",
]

#: Largest tar member read into memory. The official batches are ~31 MB each;
#: this bound stops a crafted archive from claiming gigabytes.
MAX_MEMBER_BYTES = 256 * 2**20


def _reconstruct(*args):
    # numpy.core was renamed numpy._core in NumPy 2; resolve lazily so that
    # pickles written by either NumPy load without a DeprecationWarning.
    from numpy._core.multiarray import _reconstruct as rec

    return rec(*args)


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    # Python 3 writes ``bytes`` in protocol-2 pickles as _codecs.encode(str, "latin1").
    # Only that exact use is admitted; other codecs (zlib, base64, ...) are not needed.
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return obj.encode("latin1")


#: (module, name) -> object. Everything else is refused.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only builds NumPy arrays, dtypes and plain containers.

    Parameters
    ----------
    file : binary file
        The pickle stream.
    origin : str
        Name of the file or archive member, for error messages.
    """

    def __init__(self, file, origin: str):
        # encoding="bytes": the official batches were written by Python 2, whose
        # str objects (dict keys, the array buffer) must stay bytes.
        super().__init__(file, encoding="bytes")
        self.origin = origin

    def find_class(self, module, name):  # noqa: D102 - pickle API
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to unpickle {module}.{name} from {self.origin}: "
                "not a CIFAR-10 batch (crafted or corrupted archive)"
            ) from None

    def persistent_load(self, pid):  # noqa: D102 - pickle API
        raise DataError(
            f"refusing to unpickle a persistent reference from {self.origin}: "
            "not a CIFAR-10 batch (crafted or corrupted archive)"
        )


def safe_loads(data: bytes, origin: str):
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    Parameters
    ----------
    data : bytes
        The pickle.
    origin : str
        Where it came from (path or ``archive:member``), for error messages.

    Returns
    -------
    object
        The unpickled object (for a CIFAR batch, a dict with bytes keys).

    Raises
    ------
    DataError
        On a forbidden global or a corrupted pickle.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), origin).load()
    except DataError:
        raise
    except Exception as e:  # UnpicklingError, EOFError, ValueError, TypeError, ...
        raise DataError(
            f"{origin}: not a readable CIFAR-10 batch ({type(e).__name__}: {_one_line(e)}); "
            "re-download the official cifar-10-python.tar.gz"
        ) from None


def check_member(member: tarfile.TarInfo, archive: str) -> None:
    """Refuse a tar member that is not a plain file or folder with a safe relative name.

    Raises
    ------
    DataError
        For absolute names, ``..`` components, links, devices and fifos, or
        members larger than :data:`MAX_MEMBER_BYTES`.
    """
    name = member.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or posixpath.isabs(name) or (parts and parts[0].endswith(":")):
        reason = "has an absolute name"
    elif ".." in parts:
        reason = "has a '..' component"
    elif member.issym() or member.islnk():
        reason = f"is a link (to {member.linkname!r})"
    elif not (member.isfile() or member.isdir()):
        reason = "is a device, fifo or other special file"
    elif member.isfile() and member.size > MAX_MEMBER_BYTES:
        reason = f"is implausibly large ({member.size} bytes)"
    else:
        return
    raise DataError(
        f"{archive}: refusing unsafe archive member {name!r}: it {reason} "
        "(crafted or corrupted archive); pass a clean archive"
    )


def iter_tar_members(path, want=None):
    """Stream the regular files of a tar archive without extracting to disk.

    Every member is checked with :func:`check_member`, including those skipped.

    Parameters
    ----------
    path : path-like
        A ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2`` or ``.tar.xz`` file.
    want : callable, optional
        ``want(name) -> bool``; members for which it is false are not read.

    Yields
    ------
    name : str
        The member name (``./`` prefixes removed).
    data : bytes
        Its content.

    Raises
    ------
    DataError
        For unsafe members, a truncated or corrupted archive, or a file that is
        not a tar archive.
    """
    archive = str(path)
    try:
        with _decompressed(archive) as raw, tarfile.open(fileobj=raw, mode="r|") as tf:
            # "r|": streaming mode, one pass, no random access needed.
            for member in tf:
                check_member(member, archive)
                if not member.isfile():
                    continue
                name = _clean_name(member.name)
                if want is not None and not want(name):
                    continue
                f = tf.extractfile(member)
                data = f.read()
                if len(data) != member.size:
                    raise EOFError(f"member {member.name!r} is truncated")
                yield name, data
            # tarfile stops quietly at a header cut short; reading the compressed
            # stream to its end makes gzip/bz2/xz check their length and CRC.
            while raw.read(1 << 20):
                pass
    except DataError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(
            f"{archive}: unreadable archive ({type(e).__name__}: {_one_line(e)}): truncated, "
            "corrupted or not a tar archive; download or pack it again"
        ) from None


_MAGIC = {b"\x1f\x8b": gzip.GzipFile, b"BZh": bz2.BZ2File, b"\xfd7zXZ\x00": lzma.LZMAFile}


def _decompressed(archive: str):
    """The archive's bytes as a stream, decompressed by a reader that detects truncation."""
    with open(archive, "rb") as f:
        head = f.read(6)
    for magic, opener in _MAGIC.items():
        if head.startswith(magic):
            return opener(archive, "rb")
    return open(archive, "rb")


def _clean_name(name: str) -> str:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def _one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return " ".join(text.split())
