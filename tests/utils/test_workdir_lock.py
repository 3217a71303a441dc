"""One run per workdir: the lock names its holder, and a dead holder's lock is taken over."""

import os
import signal
import subprocess
import sys

import pytest

from keras_mae.utils import workdir_lock
from tests.run_app import ROOT, backend_independent

HOLDER = """
import sys, time
from keras_mae.utils.workdir_lock import lock_workdir
lock_workdir(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


@backend_independent  # a lock file and processes: no Keras backend involved
def test_second_run_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "--workdir=run_a"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(workdir_lock.WorkdirInUse, match=rf"in use by another run \(pid {holder.pid} on .*"
                                                            r"--workdir=run_a\); wait for it .* another --workdir"):
            workdir_lock.lock_workdir(str(tmp_path))
        # Killed the hard way: no clean-up ran, the kernel released the lock.
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        workdir_lock.lock_workdir(str(tmp_path))
        with open(tmp_path / workdir_lock.LOCK_FILE) as f:
            assert f.read().startswith(f"pid {os.getpid()} on ")
        # This process holds it now: another process is refused.
        other = subprocess.run([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, capture_output=True,
                               text=True, timeout=60)
        assert other.returncode != 0 and f"in use by another run (pid {os.getpid()} " in other.stderr
    finally:
        holder.kill()


def test_only_the_chief_process_locks(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    workdir_lock.lock_workdir(str(tmp_path))
    assert not (tmp_path / workdir_lock.LOCK_FILE).exists()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("TF_CONFIG", '{"task": {"type": "worker", "index": 1}}')
    workdir_lock.lock_workdir(str(tmp_path))
    assert not (tmp_path / workdir_lock.LOCK_FILE).exists()
