"""One run per workdir: an advisory lock (`flock`) on `workdir/.lock`, held for the life of the process.

The kernel releases the lock when the process ends, however it ends (exit, exception, SIGKILL, out of
memory), so a lock left by a dead run is taken over by the next one with no clean-up. The lock file
names the holder (pid, host, start time, command) for the error of a second run. In a multi-process
job only the chief process (`keras_mae.distribution.is_chief`) takes the lock; the others share its workdir.
"""

import fcntl
import os
import socket
import sys
import time

from keras_mae.distribution import is_chief

LOCK_FILE = ".lock"
_HELD = {}  # real path of a lock file -> its open file, kept open (and locked) until the process ends


class WorkdirInUse(RuntimeError):
    """Another live process holds the workdir's lock."""


def lock_workdir(workdir):
    """Takes `workdir`'s lock for the rest of this process (a no-op when this process holds it already).

    Args:
        workdir: str. An existing folder.

    Raises:
        WorkdirInUse: another live process holds it; the message names that process.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> lock_workdir(folder); lock_workdir(folder)  # taken once, held until the process ends
    >>> open(os.path.join(folder, LOCK_FILE)).read().startswith(f"pid {os.getpid()} ")
    True
    """
    path = os.path.join(workdir, LOCK_FILE)
    key = os.path.realpath(path)
    if key in _HELD or not is_chief():
        return
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "a process that has not written its name yet"
        handle.close()
        raise WorkdirInUse(f"workdir {workdir!r} is in use by another run ({holder}); wait for it to end or stop it, "
                           "or pass another --workdir.") from None
    handle.seek(0)
    handle.truncate()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}: {' '.join(sys.argv)}"[:1000] + "\n")
    handle.flush()
    _HELD[key] = handle
