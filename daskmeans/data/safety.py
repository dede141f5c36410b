"""Guards for reading untrusted archives: a restricted unpickler and bounded archive readers.

CIFAR-10's official batches are pickles, and pickles can run arbitrary code; a
downloaded or user-supplied archive is therefore treated as hostile:

* a pickle is first scanned opcode by opcode (:func:`scan_pickle`): only the
  opcodes a CIFAR batch uses, memo indices in sequence, string lengths within the
  bytes that remain, a bounded number of operations;
* it is then loaded by :class:`RestrictedUnpickler`, which admits four globals
  and builds arrays only from placeholders whose ``__setstate__`` checks the
  declared shape and dtype against the real byte count before any array exists
  (``numpy.ndarray`` itself is never callable);
* archives are never extracted to disk: members are read in memory, members that
  could escape a folder or point elsewhere are refused, and the bytes an archive
  expands to are bounded, in each member, in total and as a ratio to its
  compressed size, before they are read.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import math
import os
import pickle
import pickletools
import posixpath
import stat
import tarfile
import zipfile
import zlib

import numpy as np

from .. import userdirs
from ..errors import DataError

__all__ = [
    "ALLOWED_GLOBALS",
    "MAX_MEMBER_BYTES",
    "MAX_RATIO",
    "MAX_READ_BYTES",
    "RestrictedUnpickler",
    "check_member",
    "iter_archive_members",
    "iter_tar_members",
    "iter_zip_members",
    "read_regular_file",
    "safe_loads",
    "scan_pickle",
]

#: Largest archive member accepted at all (even one that is skipped).
MAX_MEMBER_BYTES = 256 * 2**20
#: Largest total of member bytes read into memory from one archive (the official
#: archive holds ~178 MB; 60,000 JPEGs ~100 MB).
MAX_READ_BYTES = 1024 * 2**20
#: Largest ratio of the unpacked tar stream to the archive's size on disk (the
#: official archive ~1.1, image tarballs < 10; a zero-filled bomb ~1000).
MAX_RATIO = 100
#: Below this many unpacked bytes the ratio is not checked (tiny archives compress well).
RATIO_FLOOR = 64 * 2**20
#: Most pickle operations in one batch (an official batch has ~40,000).
MAX_PICKLE_OPS = 500_000
#: Rows and columns an array in a batch may declare: CIFAR's 10,000 x 3072.
MAX_ROWS = 10_000
MAX_COLS = 3072


def _refuse(origin: str, what: str) -> DataError:
    return DataError(f"{origin}: {what}; not a CIFAR-10 batch (crafted or corrupted archive)")


# --- pickles ---------------------------------------------------------------------------

#: Opcodes of protocol 2-4 pickles of dicts, lists, bytes/str, ints and NumPy arrays.
ALLOWED_OPCODES = frozenset(
    {
        "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK",
        "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
        "DICT", "LIST", "SETITEM", "SETITEMS", "APPEND", "APPENDS",
        "BININT", "BININT1", "BININT2", "LONG1", "NONE", "NEWTRUE", "NEWFALSE", "BINFLOAT",
        "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINUNICODE", "SHORT_BINUNICODE",
        "BINPUT", "LONG_BINPUT", "MEMOIZE", "BINGET", "LONG_BINGET",
        "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD",
    }
)  # fmt: skip
_PUTS = frozenset({"BINPUT", "LONG_BINPUT"})
_GETS = frozenset({"BINGET", "LONG_BINGET"})


def scan_pickle(data: bytes, origin: str) -> None:
    """Check a pickle's opcodes before anything is built from it.

    Refuses opcodes a CIFAR batch does not use, more than :data:`MAX_PICKLE_OPS`
    operations, memo indices that are not written in sequence (a huge index makes
    the unpickler allocate a huge memo) or read before being written, strings
    longer than the bytes that remain, long integers over 8 bytes, globals other
    than :data:`ALLOWED_GLOBALS`, and bytes after ``STOP``.

    Raises
    ------
    DataError
        Naming the first offending opcode and its position.
    """
    puts = 0
    n_ops = 0
    end = None
    try:
        for op, arg, pos in pickletools.genops(io.BytesIO(data)):
            n_ops += 1
            name = op.name
            if n_ops > MAX_PICKLE_OPS:
                raise _refuse(origin, f"more than {MAX_PICKLE_OPS:,} pickle operations")
            if name not in ALLOWED_OPCODES:
                raise _refuse(origin, f"pickle opcode {name} at byte {pos} is not allowed")
            if name in _PUTS:
                if arg != puts:  # picklers number memo entries 0, 1, 2, ...
                    raise _refuse(origin, f"memo index {arg} at byte {pos} out of sequence (expected {puts})")
                puts += 1
            elif name == "MEMOIZE":
                puts += 1
            elif name in _GETS and not (0 <= arg < puts):
                raise _refuse(origin, f"memo index {arg} at byte {pos} was never stored")
            elif name == "LONG1" and not (-(2**63) <= arg < 2**64):
                raise _refuse(origin, f"integer at byte {pos} is too large")
            elif name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                if (module, attr) not in ALLOWED_GLOBALS:
                    raise DataError(
                        f"refusing to unpickle {module}.{attr} from {origin}: "
                        "not a CIFAR-10 batch (crafted or corrupted archive)"
                    )
            elif name == "STOP":
                end = pos + 1
    except DataError:
        raise
    except Exception as e:  # ValueError from genops: truncated, claims more than remains, bad opcode
        raise _refuse(origin, f"unreadable pickle ({type(e).__name__}: {_one_line(e)})") from None
    if end is None:
        raise _refuse(origin, "pickle has no STOP")
    if end != len(data):
        raise _refuse(origin, f"{len(data) - end} bytes after the end of the pickle")


class _NdarrayClass:
    """Stands for ``numpy.ndarray`` in a pickle: only :func:`_reconstruct` accepts it.

    Calling it is refused, so ``ndarray(shape, dtype, buffer, offset, strides)`` (a
    view claiming any size from a few bytes) cannot be built.
    """

    __slots__ = ()

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError("numpy.ndarray called directly (a view of any size and strides)")

    def __repr__(self):
        return "numpy.ndarray"


_NDARRAY = _NdarrayClass()

#: dtype codes an array in a batch may have (pixels uint8; labels ints).
_DTYPES = frozenset({"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8"})


class _DtypeSpec:
    """Placeholder for ``numpy.dtype(code, align, copy)`` until its state is checked."""

    __slots__ = ("code", "dtype")

    def __init__(self, code):
        self.code = code
        self.dtype = None

    def __setstate__(self, state):
        if self.dtype is not None:
            raise pickle.UnpicklingError("dtype state set twice")
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)):
            raise pickle.UnpicklingError(f"unexpected dtype state {state!r:.80}")
        order = state[1]
        if isinstance(order, bytes):
            order = order.decode("latin1")
        if order not in ("<", ">", "|", "=") or state[2:5] != (None, None, None) or state[5:8] != (-1, -1, 0):
            raise pickle.UnpicklingError(f"unexpected dtype state {state!r:.80}")
        dt = np.dtype(self.code)
        self.dtype = dt.newbyteorder(order) if order in "<>" and dt.itemsize > 1 else dt


def _dtype(code, align=False, copy=True):
    if isinstance(code, bytes):
        code = code.decode("latin1")
    if code not in _DTYPES or not isinstance(align, bool) or not isinstance(copy, bool):
        raise pickle.UnpicklingError(f"dtype {code!r:.40} is not allowed")
    return _DtypeSpec(code)


class _ArraySpec:
    """Placeholder for an array until its state (shape, dtype, bytes) is checked."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if self.array is not None:
            raise pickle.UnpicklingError("array state set twice")
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise pickle.UnpicklingError("unexpected array state")
        shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DtypeSpec) or dtype.dtype is None:
            raise pickle.UnpicklingError("array without an allowed dtype")
        if not (
            isinstance(shape, tuple)
            and 1 <= len(shape) <= 2
            and all(type(s) is int and s >= 0 for s in shape)
            and shape[0] <= MAX_ROWS * MAX_COLS
            and (len(shape) == 1 or (shape[0] <= MAX_ROWS and shape[1] <= MAX_COLS))
        ):
            raise pickle.UnpicklingError(f"array shape {shape!r:.60} is not a CIFAR batch's")
        if not isinstance(fortran, bool) or not isinstance(raw, bytes):
            raise pickle.UnpicklingError("array data is not bytes")
        # The declared size must equal the bytes actually present, before any array exists.
        need = math.prod(shape) * dtype.dtype.itemsize
        if len(raw) != need:
            raise pickle.UnpicklingError(
                f"array declares shape {shape} of {dtype.dtype} ({need} bytes) but holds {len(raw)} bytes"
            )
        arr = np.frombuffer(raw, dtype.dtype)
        self.array = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def _reconstruct(cls, shape, typecode):
    # What ndarray.__reduce__ writes: _reconstruct(ndarray, (0,), b"b"), then BUILD.
    if cls is not _NDARRAY or shape != (0,) or typecode not in (b"b", "b"):
        raise pickle.UnpicklingError("_reconstruct with unexpected arguments")
    return _ArraySpec()


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    # Python 3 writes ``bytes`` in protocol-2 pickles as _codecs.encode(str, "latin1").
    # Only that exact use is admitted; other codecs (zlib, base64, ...) are not needed.
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r:.20}")
    return obj.encode("latin1")


#: (module, name) -> object. Everything else is refused.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _codecs_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only builds plain containers, bytes, ints and checked placeholders.

    Use :func:`safe_loads`, which scans the opcodes first and resolves the
    placeholders into NumPy arrays.

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
        except (KeyError, TypeError):
            raise DataError(
                f"refusing to unpickle {module}.{name} from {self.origin}: "
                "not a CIFAR-10 batch (crafted or corrupted archive)"
            ) from None

    def persistent_load(self, pid):  # noqa: D102 - pickle API
        raise DataError(
            f"refusing to unpickle a persistent reference from {self.origin}: "
            "not a CIFAR-10 batch (crafted or corrupted archive)"
        )


def _resolve(obj, origin: str, depth: int = 0):
    """Replace placeholders by arrays; refuse anything a batch does not hold."""
    if depth > 3:  # a batch is dict -> list -> bytes
        raise _refuse(origin, "nested deeper than a CIFAR batch")
    if isinstance(obj, _ArraySpec):
        if obj.array is None:
            raise _refuse(origin, "array without data")
        return obj.array
    if isinstance(obj, (_DtypeSpec, _NdarrayClass)) or callable(obj):
        raise _refuse(origin, f"unexpected {type(obj).__name__} object")
    if isinstance(obj, dict):
        return {_resolve(k, origin, depth + 1): _resolve(v, origin, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, origin, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v, origin, depth + 1) for v in obj)
    if obj is None or isinstance(obj, (bytes, str, int, float, bool)):
        return obj
    raise _refuse(origin, f"unexpected {type(obj).__name__} object")


def safe_loads(data: bytes, origin: str):
    """Unpickle ``data`` after :func:`scan_pickle`, with :class:`RestrictedUnpickler`.

    Parameters
    ----------
    data : bytes
        The pickle.
    origin : str
        Where it came from (path or ``archive:member``), for error messages.

    Returns
    -------
    object
        Dicts, lists, tuples, bytes, str, ints and floats, and NumPy integer
        arrays of at most two dimensions (read-only views of the pickle's bytes).

    Raises
    ------
    DataError
        On a forbidden opcode or global, a size that disagrees with the bytes
        present, or a corrupted pickle.
    """
    scan_pickle(data, origin)
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), origin).load()
    except DataError:
        raise
    except Exception as e:  # UnpicklingError, EOFError, ValueError, TypeError, ...
        raise _refuse(origin, f"unreadable pickle ({type(e).__name__}: {_one_line(e)[:200]})") from None
    return _resolve(obj, origin)


# --- files and archives ------------------------------------------------------------------


def read_regular_file(path, limit: int, what: str = "file") -> bytes:
    """Read a regular file of at most ``limit`` bytes.

    Devices, FIFOs and sockets (``/dev/zero``, a named pipe, also when reached
    through a link) are refused before they are opened for reading, so that a
    read can neither hang nor grow without bound.

    Raises
    ------
    DataError
        For a special file, a file over ``limit`` bytes, or an unreadable one.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e}); {userdirs.read_fix(path)}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{path}: {special_kind(st.st_mode)}, not a regular file; pass a regular {what}")
        if st.st_size > limit:
            raise DataError(
                f"{path}: {st.st_size:,} bytes, more than any {what} should hold ({limit:,}); "
                "remove or replace the file"
            )
        data = f.read(limit + 1)
    if len(data) > limit:
        raise DataError(f"{path}: grew beyond {limit:,} bytes while being read; remove or replace the file")
    return data


def special_kind(mode: int) -> str:
    """What a non-regular file is, in words (for messages)."""
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a special file"


def _unsafe(archive: str, name: str, reason: str) -> DataError:
    return DataError(
        f"{archive}: refusing unsafe archive member {name!r}: it {reason} "
        "(crafted or corrupted archive); pass a clean archive"
    )


def _check_name(name: str, archive: str) -> None:
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or posixpath.isabs(name) or (parts and parts[0].endswith(":")):
        raise _unsafe(archive, name, "has an absolute name")
    if ".." in parts:
        raise _unsafe(archive, name, "has a '..' component")


def check_member(member: tarfile.TarInfo, archive: str) -> None:
    """Refuse a tar member that is not a plain file or folder with a safe relative name.

    Raises
    ------
    DataError
        For absolute names, ``..`` components, links, devices and fifos, or
        members larger than :data:`MAX_MEMBER_BYTES`.
    """
    _check_name(member.name, archive)
    if member.issym() or member.islnk():
        raise _unsafe(archive, member.name, f"is a link (to {member.linkname!r})")
    if not (member.isfile() or member.isdir()):
        raise _unsafe(archive, member.name, "is a device, fifo or other special file")
    if member.isfile() and member.size > MAX_MEMBER_BYTES:
        raise _unsafe(archive, member.name, f"is implausibly large ({member.size:,} bytes)")


class _Budget:
    """Bounds what an archive may expand to, checked from sizes declared in headers."""

    def __init__(self, archive: str, packed: int, limit=None):
        self.archive = archive
        self.packed = packed
        self.limit = limit
        self.unpacked = 0
        self.read = 0

    def admit(self, name: str, size: int, wanted: bool, overhead: int = 0) -> None:
        self.unpacked += size + overhead
        allowed = max(RATIO_FLOOR, MAX_RATIO * self.packed)
        if self.unpacked > allowed:
            raise DataError(
                f"{self.archive}: unpacks to more than {self.unpacked:,} bytes from {self.packed:,} "
                f"(more than {MAX_RATIO}x its size; a decompression bomb?), refused at member {name!r}; "
                "pass a clean archive"
            )
        if not wanted:
            return
        if self.limit is not None and size > self.limit(name):
            raise _unsafe(self.archive, name, f"is implausibly large for what it is ({size:,} bytes)")
        self.read += size
        if self.read > MAX_READ_BYTES:
            raise DataError(
                f"{self.archive}: its images and batches hold more than {MAX_READ_BYTES:,} bytes, more than "
                "CIFAR-10-sized data; pass a CIFAR-10-sized archive"
            )


def iter_tar_members(path, want=None, limit=None):
    """Stream the regular files of a tar archive without extracting to disk.

    Every member is checked with :func:`check_member`, including those skipped,
    and the bytes the archive expands to are bounded (see :class:`_Budget`)
    from each member's header, before its content is read or skipped.

    Parameters
    ----------
    path : path-like
        A ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2`` or ``.tar.xz`` file.
    want : callable, optional
        ``want(name) -> bool``; members for which it is false are not read.
    limit : callable, optional
        ``limit(name) -> int``: the most bytes a wanted member may hold.

    Yields
    ------
    name : str
        The member name (``./`` prefixes removed).
    data : bytes
        Its content.

    Raises
    ------
    DataError
        For unsafe or oversized members, an archive that expands too much, a
        truncated or corrupted archive, or a file that is not a tar archive.
    """
    archive = str(path)
    try:
        budget = _Budget(archive, os.stat(archive).st_size, limit)
        with _decompressed(archive) as raw, tarfile.open(fileobj=raw, mode="r|") as tf:
            # "r|": streaming mode, one pass, no random access needed.
            for member in tf:
                check_member(member, archive)
                name = _clean_name(member.name)
                wanted = member.isfile() and (want is None or want(name))
                budget.admit(member.name, member.size if member.isfile() else 0, wanted, overhead=512)
                if not wanted:
                    continue
                data = tf.extractfile(member).read(member.size)
                if len(data) != member.size:
                    raise EOFError(f"member {member.name!r} is truncated")
                yield name, data
            # tarfile stops quietly at a header cut short; reading the compressed
            # stream to its end makes gzip/bz2/xz check their length and CRC.
            # The trailing bytes are bounded like the members.
            while block := raw.read(1 << 20):
                budget.admit("(end of archive)", len(block), False)
    except DataError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as e:
        raise DataError(
            f"{archive}: unreadable archive ({type(e).__name__}: {_one_line(e)}): truncated, "
            "corrupted or not a tar archive; download or pack it again"
        ) from None


def iter_zip_members(path, want=None, limit=None):
    """The regular files of a zip archive, like :func:`iter_tar_members`.

    The central directory is checked in full (names, links, sizes, the total and
    the ratio) before any member is read.
    """
    archive = str(path)
    try:
        with zipfile.ZipFile(archive) as zf:
            budget = _Budget(archive, os.stat(archive).st_size, limit)
            todo = []
            for info in zf.infolist():
                _check_name(info.filename, archive)
                mode = info.external_attr >> 16  # Unix mode, when a Unix tool wrote the archive
                if stat.S_ISLNK(mode):
                    raise _unsafe(archive, info.filename, "is a link")
                if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    raise _unsafe(archive, info.filename, "is a device, fifo or other special file")
                if info.is_dir():
                    continue
                if info.flag_bits & 0x1:
                    raise DataError(f"{archive}: member {info.filename!r} is encrypted; pass an unencrypted archive")
                if info.file_size > MAX_MEMBER_BYTES:
                    raise _unsafe(archive, info.filename, f"is implausibly large ({info.file_size:,} bytes)")
                name = _clean_name(info.filename)
                wanted = want is None or want(name)
                budget.admit(info.filename, info.file_size, wanted)
                if wanted:
                    todo.append((name, info))
            for name, info in todo:
                with zf.open(info) as f:
                    # Never trust the declared size alone: read at most one byte more.
                    data = f.read(info.file_size + 1)
                if len(data) != info.file_size:
                    raise zipfile.BadZipFile(f"member {info.filename!r} is not the size its header declares")
                yield name, data
    except DataError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, lzma.LZMAError, OSError,
            NotImplementedError, ValueError) as e:
        raise DataError(
            f"{archive}: unreadable archive ({type(e).__name__}: {_one_line(e)}): truncated, "
            "corrupted or not a zip archive; download or pack it again"
        ) from None


def iter_archive_members(path, want=None, limit=None):
    """:func:`iter_zip_members` for a zip file (by content), else :func:`iter_tar_members`."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head in (b"PK\x03\x04", b"PK\x05\x06"):
        return iter_zip_members(path, want, limit)
    return iter_tar_members(path, want, limit)


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
