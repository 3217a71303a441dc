"""Starts a script or an app as a job of several processes on this machine, the way each engine's launcher does.

- torch: `torchrun --standalone --nproc_per_node=N` (gloo on CPUs);
- jax: N processes of one CPU device each, with Keras's variables KERAS_DISTRIBUTION_JOB_ADDRESSES (the coordinator, on a free
  localhost port), KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID;
- tensorflow: N workers with a TF_CONFIG of free localhost ports.
"""

import json
import os
import socket
import subprocess
import sys

import keras

from tests.run_app import APPS, ROOT

DISTRIBUTION = {"torch": "ddp", "jax": "data_parallel", "tensorflow": "multi_worker_mirrored"}


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(script, *args, processes=2, timeout=400, env=None):
    """Runs `script` (a path, or an app's name) with `args` in `processes` processes; returns their
    `(returncode, stdout, stderr)` in process order (torchrun's: one entry for the whole job)."""
    path = script if os.sep in script else os.path.join(APPS, script)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT, **(env or {})}
    backend = keras.backend.backend()
    if backend == "torch":
        torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
        command = [torchrun, "--standalone", f"--nproc_per_node={processes}", path, *map(str, args)]
        return [_finish(subprocess.Popen(command, **_pipes(env)), timeout)]
    ports = free_ports(processes)
    jobs = []
    for index in range(processes):
        if backend == "jax":
            # One CPU device per process whatever XLA_FLAGS the caller has: the job's devices are its processes.
            extra = {"JAX_NUM_CPU_DEVICES": "1", "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"localhost:{ports[0]}",
                     "KERAS_DISTRIBUTION_NUM_PROCESSES": str(processes), "KERAS_DISTRIBUTION_PROCESS_ID": str(index)}
        else:
            extra = {"TF_CONFIG": json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                                              "task": {"type": "worker", "index": index}})}
        jobs.append(subprocess.Popen([sys.executable, path, *map(str, args)], **_pipes({**env, **extra})))
    return _finish_all(jobs, timeout)


def _pipes(env):
    return {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "cwd": ROOT, "env": env}


def _finish_all(jobs, timeout, grace=10):
    """Waits for every process; once one has failed, stops the others after `grace` seconds (as torchrun does:
    the survivors of a job that lost a process wait in its collectives)."""
    import threading
    import time

    outputs = [None] * len(jobs)

    def read(i):
        outputs[i] = jobs[i].communicate()

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(len(jobs))]
    for reader in readers:
        reader.start()
    deadline, failed_at = time.monotonic() + timeout, None
    while any(job.poll() is None for job in jobs) and time.monotonic() < deadline:
        if failed_at is None and any(job.poll() not in (None, 0) for job in jobs):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() > failed_at + grace:
            break
        time.sleep(0.2)
    for job in jobs:
        if job.poll() is None:
            job.kill()
    for reader in readers:
        reader.join()
    return [(job.returncode, out, err) for job, (out, err) in zip(jobs, outputs)]


def _finish(job, timeout):
    try:
        out, err = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        job.kill()
        out, err = job.communicate()
        return -9, out, err + f"\n(killed after {timeout} s)"
    return job.returncode, out, err


def check(results):
    """Fails with every process's output tail unless all exited 0."""
    if any(code for code, _, _ in results):
        tails = "\n".join(f"--- process {i}: exit {code}\n{out[-1500:]}\n{err[-3000:]}"
                          for i, (code, out, err) in enumerate(results))
        raise AssertionError(f"a process failed:\n{tails}")
    return results
