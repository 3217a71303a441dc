"""The jax backend on glibc: an app restarts itself once with glibc's huge pages, before it imports Keras.

XLA:CPU allocates a scratch buffer of hundreds of MiB for every train step, and glibc gives blocks that large back
to the OS when they are freed, so every step page-faults its buffer back in (about 20% of a 2-core CPU's step;
BENCHMARKS.md, "glibc's huge pages for the jax backend"). `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (glibc >= 2.35)
backs such blocks with 2 MiB pages, 512 times fewer faults. glibc reads it only when a process starts, and
`mallopt` has no equivalent (measured: a 1 GiB mmap threshold left the faults as they were), so an app started
without it runs itself again with it: `os.execve`, the same process id, command line and environment plus the
setting. A GLIBC_TUNABLES already in the environment, even an empty one, is left as it is: that is the opt-out.
The restart does not ask whether jax has a GPU (that needs jax imported); on a GPU host the setting only concerns
host memory, and its effect there is not measured.
"""

import json
import os
import sys

HUGE_PAGES = "glibc.malloc.hugetlb=1"
MIN_GLIBC = (2, 35)  # the first glibc with the hugetlb tunable


def keras_backend(environ):
    """The backend Keras will load, found as Keras finds it but without importing it: $KERAS_BACKEND, else the
    "backend" of keras.json in $KERAS_HOME (default ~/.keras), else tensorflow."""
    if environ.get("KERAS_BACKEND"):
        return environ["KERAS_BACKEND"]
    home = environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as config:
            return json.load(config).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def glibc_version():
    """(major, minor) of the running glibc, or None where the C library is another (musl, macOS, Windows)."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):
        return None


def transparent_huge_pages():
    """The kernel's transparent huge page mode ("always", "madvise" or "never"), or None where it cannot be read."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as mode:
            return mode.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return None


def restart_command(environ, argv, executable, version, thp_mode):
    """What `restart_with_huge_pages` runs: (executable, argv, environment), or None where it changes nothing.

    None: another backend, GLIBC_TUNABLES already set, `version` (glibc's (major, minor), None for another C
    library) below 2.35, `thp_mode` "never" (the kernel's huge pages off), or no `executable` to run again.
    """
    if ("GLIBC_TUNABLES" in environ or keras_backend(environ) != "jax" or version is None or version < MIN_GLIBC
            or thp_mode == "never" or not executable):
        return None
    return executable, list(argv), {**environ, "GLIBC_TUNABLES": HUGE_PAGES}


def restart_with_huge_pages():
    """Runs this process again with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 where that helps (`restart_command`);
    returns where it does not. Call it first in `if __name__ == "__main__"`: what ran before it runs twice."""
    # sys.orig_argv: the interpreter's own options and `-m` included.
    command = restart_command(os.environ, sys.orig_argv, sys.executable, glibc_version(), transparent_huge_pages())
    if command is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(*command)
    except OSError:  # the interpreter cannot be run again (an embedded one): go on without huge pages
        return
