"""Full disks: checked before a write where the size is known, and one line naming the path when a write fails.

HDF5 (Keras's `.weights.h5`) cannot survive running out of space: its failed close leaves the library in a
state that crashes the process at exit. So a checkpoint's space is checked before it is written, against the
size of the one before it; writes in Python (json, logs, `.keras` archives) turn out-of-space errors into a
`DiskFullError` naming the file.
"""

import contextlib
import errno
import os
import shutil

MARGIN = 1 << 20  # bytes kept free beyond a write's estimate (file system metadata, the logs written meanwhile)


class DiskFullError(OSError):
    """Not enough space for a write; the message names the path, the space needed and the space free."""

    def __str__(self):
        return self.strerror


def mebibytes(count):
    """'3.2 MiB' from a byte count (the unit of the apps' up-front disk check)."""
    return f"{count / 2**20:.1f} MiB"


def free_bytes(path):
    """Free bytes on the file system holding `path` (its nearest existing parent)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def require_free_space(path, needed_bytes):
    """Raises `DiskFullError` unless `needed_bytes` (plus `MARGIN`) fit where `path` is to be written.

    >>> require_free_space("/tmp/x", 0)
    """
    free = free_bytes(os.path.dirname(os.path.abspath(path)))
    if free < needed_bytes + MARGIN:
        raise DiskFullError(errno.ENOSPC, _message(path, needed_bytes, free))


def is_out_of_space(error):
    """Whether `error` is an out-of-space (or over-quota) failure, as Python or HDF5 words it."""
    return isinstance(error, OSError) and (
        error.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(error))


@contextlib.contextmanager
def out_of_space_as_one_line(path, needed_bytes=None):
    """Re-raises an out-of-space error of the block as a `DiskFullError` naming `path`."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as error:
        if not is_out_of_space(error):
            raise
        raise DiskFullError(errno.ENOSPC, _message(path, needed_bytes, free_bytes(path))) from None


def _message(path, needed_bytes, free):
    needs = f"it needs about {mebibytes(needed_bytes)} (and {mebibytes(MARGIN)} to spare), " if needed_bytes else ""
    return (f"No space left on the device for {path}: {needs}{mebibytes(free)} free. Free some space (or use "
            "another directory) and rerun: the files written before are complete.")
