"""Output folders are checked before any work starts: an ``--out`` that is a file, lies below
a file, or cannot be written is a one-line ``ValueError``, not an ``OSError`` traceback after
minutes of work. Disk-full errors are reported as "no space left on device" with the file."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

NO_SPACE_MARKERS = ("inline_container", "file write failed", "no space left on device")


def nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists (``/`` at worst)."""
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` as a ``Path`` if it can become (or is) a writable directory; else a
    ``ValueError`` saying why. Creates nothing: a probe file is made in the nearest existing
    ancestor and removed at once."""
    path = Path(path)
    existing = nearest_existing(path.absolute())
    if not existing.is_dir():
        where = "is a file" if existing == path.absolute() else f"lies below the file {existing}"
        raise ValueError(f"{what} {path} {where}; give a directory path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".maniflow_write_test.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ValueError(f"{what} {path} is not writable ({existing}: {reason})") from exc
    return path


def is_no_space_error(exc: BaseException) -> bool:
    """True for ``ENOSPC`` / ``EDQUOT`` and for torch's disk-full errors (``enforce fail at
    inline_container.cc``, ``file write failed``)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, RuntimeError) and any(
        marker in str(exc).lower() for marker in NO_SPACE_MARKERS)


def no_space_error(path: str | os.PathLike) -> OSError:
    """The ``OSError(ENOSPC)`` raised when writing ``path`` filled the disk."""
    return OSError(errno.ENOSPC, "no space left on device while writing", str(path))


@contextlib.contextmanager
def naming_file(path: str | os.PathLike) -> Iterator[None]:
    """Re-raise an ``OSError`` that names no file (a write flushed at ``close()`` on a full
    disk) as the same error naming ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def describe_os_error(exc: BaseException) -> str:
    """One line for the command line: ``<reason>: <file>`` (``no space left on device`` for a
    full disk)."""
    if is_no_space_error(exc):
        reason = "no space left on device"
    else:
        reason = getattr(exc, "strerror", None) or str(exc)
    files = [f for f in (getattr(exc, "filename", None), getattr(exc, "filename2", None)) if f]
    return f"{reason}: {' -> '.join(map(str, files))}" if files else reason
