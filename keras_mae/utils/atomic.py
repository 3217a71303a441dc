"""Write-then-rename file writes: a reader (or a crash) never sees a half-written file."""

import contextlib
import glob
import json
import os
import tempfile

from keras_mae.utils.disk_space import out_of_space_as_one_line

TEMPORARY_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it onto `path` if the block succeeds.

    The temporary name keeps `path`'s suffix (Keras picks formats by suffix).
    On failure the temporary file is removed and `path` is left untouched; running
    out of space is a `DiskFullError` naming `path`.
    """
    directory, base = os.path.split(os.path.abspath(path))
    suffix = "".join(base.partition(".")[1:])
    with out_of_space_as_one_line(path):
        fd, tmp = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=suffix, dir=directory)
        os.close(fd)
        os.remove(tmp)  # writers such as h5py want to create the file themselves
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def write_json_atomic(path, data):
    """json.dump to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())


def remove_stale_temporaries(directory):
    """Removes the temporary files `atomic_path` left in `directory` when its process was killed mid-write.

    Only names with `atomic_path`'s prefix are touched; call it when no writer runs there (before training).
    Returns the removed paths.
    """
    stale = glob.glob(os.path.join(glob.escape(directory), TEMPORARY_PREFIX + "*"))
    for path in stale:
        os.remove(path)
    return stale
