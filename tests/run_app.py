"""The one way the tests run an app or a script: a subprocess from the repository root on the current backend."""

import json
import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = os.path.join(ROOT, "apps")
FASHION_MNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
# Cases that do not depend on the backend (flags, files, locks) run on one backend, to keep CI short.
backend_independent = pytest.mark.skipif(keras.backend.backend() != "torch",
                                         reason="backend-independent: checked on the torch backend")


def app_command(script, *args):
    """`python apps/<script> args...`, or `python <script>` for a path outside apps/."""
    path = script if os.path.isabs(script) or os.sep in script else os.path.join(APPS, script)
    return [sys.executable, path, *map(str, args)]


def run(command, check=True, timeout=400, env=None):
    """Runs `command` (a list) from the repository root; with `check`, fails showing the output's tails."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)
    if check and result.returncode:
        raise AssertionError(f"exit {result.returncode}: {' '.join(command[1:3])}\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def run_app(script, *args, check=True, timeout=400, env=None):
    """`run(app_command(script, *args))`: the CompletedProcess."""
    return run(app_command(script, *args), check=check, timeout=timeout, env=env)


# Runs pretrain.py's main through absl's app.run once per case, in one process (a fresh process per case costs
# seconds of imports): argv[1] is JSON [{"argv": [...], "free_bytes": int or null}]; free_bytes, when set, is what
# `shutil.disk_usage` reports as free during that case. Prints one JSON line [{"code": ..., "stderr": ...}].
PRETRAIN_MAIN_DRIVER = f"""
import contextlib, io, json, runpy, shutil, sys, traceback
sys.path.insert(0, {APPS!r})
from absl import app, flags
cases = json.loads(sys.argv[1])
sys.argv = [{os.path.join(APPS, "pretrain.py")!r}]
pretrain = runpy.run_path(sys.argv[0])
disk_usage = shutil.disk_usage
results = []
for case in cases:
    flags.FLAGS.unparse_flags()
    sys.argv = [sys.argv[0], *case["argv"]]  # as a fresh process would see them (the --flagfile check reads them)
    if case.get("free_bytes") is not None:
        shutil.disk_usage = lambda path: disk_usage(path)._replace(free=case["free_bytes"])
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            app.run(pretrain["common"].run_main(pretrain["main"]), argv=sys.argv)
            code = 0
        except SystemExit as error:
            code = error.code
        except BaseException:
            traceback.print_exc()
            code = "uncaught exception"
    shutil.disk_usage = disk_usage
    results.append({{"code": code, "stderr": stderr.getvalue()}})
print(json.dumps(results))
"""


def run_pretrain_main(cases, timeout=600, env=None):
    """`apps/pretrain.py` once per case in one process (`PRETRAIN_MAIN_DRIVER`): for cases that stop before
    training (refused flags or input), each {"argv": [...], "free_bytes": int, optional}. A list of
    {"code": exit code, "stderr": text} in the cases' order."""
    result = run([sys.executable, "-c", PRETRAIN_MAIN_DRIVER, json.dumps(cases)], timeout=timeout, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _can_mount_a_small_disk():
    """Whether `unshare` can make a private mount namespace with a tmpfs (root, or user namespaces allowed)."""
    import shutil
    import tempfile

    if not shutil.which("unshare"):
        return False
    with tempfile.TemporaryDirectory() as mountpoint:
        probe = ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$1"', "sh", mountpoint]
        return subprocess.run(probe, capture_output=True).returncode == 0


small_disk = pytest.mark.skipif(not _can_mount_a_small_disk(),
                                reason="needs `unshare -rm` with tmpfs mounts (a real full disk)")


def on_small_disk(command, mountpoint, size_mb, copy_to=None):
    """`command` (a list) with a fresh `size_mb` MB tmpfs mounted at `mountpoint` in its own mount namespace:
    a disk that really fills up. The tmpfs goes with the namespace: `copy_to` receives its files afterwards."""
    script = ('mount -t tmpfs -o size="$3"m tmpfs "$1" || exit 97; mnt=$1; dest=$2; shift 3; "$@"; code=$?; '
              'if [ -n "$dest" ]; then cp -a "$mnt/." "$dest"; fi; exit $code')
    return ["unshare", "-rm", "sh", "-c", script, "sh", mountpoint, copy_to or "", str(size_mb), *command]
