"""huge_pages: on the jax backend an app restarts itself once with glibc's huge pages, and only there."""

import json
import os
import subprocess
import sys

import pytest

from tests.run_app import APPS, ROOT, app_command, backend_independent

sys.path.insert(0, APPS)
import huge_pages  # noqa: E402

# Each interpreter start appends its GLIBC_TUNABLES (or "unset") to $STARTS_FILE: how many times a process started.
SITECUSTOMIZE = """
import os
if os.environ.get("STARTS_FILE"):
    with open(os.environ["STARTS_FILE"], "a") as starts:
        starts.write(os.environ.get("GLIBC_TUNABLES", "unset") + "\\n")
"""
needs_huge_pages = pytest.mark.skipif(
    (huge_pages.glibc_version() or (0,)) < huge_pages.MIN_GLIBC or huge_pages.transparent_huge_pages() == "never",
    reason="glibc >= 2.35 (the hugetlb tunable) and the kernel's transparent huge pages on")


@backend_independent
def test_restarts_only_the_jax_backend_on_a_glibc_with_the_tunable(tmp_path):
    argv, command = ["python", "-X", "dev", "apps/pretrain.py", "--epochs=2"], huge_pages.restart_command
    executable, new_argv, env = command({"KERAS_BACKEND": "jax", "A": "1"}, argv, "/bin/py", (2, 36), "madvise")
    assert (executable, new_argv) == ("/bin/py", argv)
    assert env == {"KERAS_BACKEND": "jax", "A": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    # A setting of the user's, even an empty one (the opt-out), is kept: no restart.
    assert command({"KERAS_BACKEND": "jax", "GLIBC_TUNABLES": ""}, argv, "/bin/py", (2, 36), "madvise") is None
    assert command({"KERAS_BACKEND": "jax", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, argv, "/bin/py",
                   (2, 36), "madvise") is None
    for backend in ("torch", "tensorflow"):
        assert command({"KERAS_BACKEND": backend}, argv, "/bin/py", (2, 36), "madvise") is None
    assert command({"KERAS_BACKEND": "jax"}, argv, "/bin/py", (2, 34), "madvise") is None  # no hugetlb tunable yet
    assert command({"KERAS_BACKEND": "jax"}, argv, "/bin/py", None, "madvise") is None  # musl, macOS: no glibc
    assert command({"KERAS_BACKEND": "jax"}, argv, "/bin/py", (2, 36), "never") is None  # no huge pages to ask for
    assert command({"KERAS_BACKEND": "jax"}, argv, "/bin/py", (2, 36), "always") is not None
    assert command({"KERAS_BACKEND": "jax"}, argv, "", (2, 36), "madvise") is None  # no interpreter to run again
    # Without KERAS_BACKEND, keras.json's backend, as Keras reads it; without either, tensorflow.
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax", "floatx": "float32"}))
    assert command({"KERAS_HOME": str(tmp_path)}, argv, "/bin/py", (2, 36), "madvise") is not None
    assert huge_pages.keras_backend({"KERAS_HOME": str(tmp_path / "none")}) == "tensorflow"


def _starts(tmp_path, command, backend, **env):
    """The GLIBC_TUNABLES of each interpreter start while running `command` on `backend`, and its stdout."""
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    starts = tmp_path / "starts.txt"
    starts.unlink(missing_ok=True)
    environ = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    environ.update(KERAS_BACKEND=backend, STARTS_FILE=str(starts), TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]), **env)
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=environ, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return starts.read_text().splitlines(), out.stdout


@backend_independent
@needs_huge_pages
def test_a_restart_keeps_the_command_line_and_happens_once(tmp_path):
    script = tmp_path / "main.py"
    script.write_text(f"import os, sys\nsys.path.insert(0, {APPS!r})\nimport huge_pages\n"
                      "huge_pages.restart_with_huge_pages()\nprint(sys.argv[1:], sys.flags.dev_mode)\n")
    starts, stdout = _starts(tmp_path, [sys.executable, "-X", "dev", str(script), "--a=1", "b c"], "jax")
    assert starts == ["unset", "glibc.malloc.hugetlb=1"]
    assert stdout.strip() == "['--a=1', 'b c'] True"  # the arguments and the interpreter's own options
    assert _starts(tmp_path, [sys.executable, str(script)], "torch")[0] == ["unset"]
    assert _starts(tmp_path, [sys.executable, str(script)], "jax", GLIBC_TUNABLES="")[0] == [""]


@backend_independent
@needs_huge_pages
@pytest.mark.slow
@pytest.mark.parametrize("script", ["pretrain.py", "linear_probe.py", "finetune.py", "evaluate.py"])
def test_the_training_and_evaluation_apps_restart_on_jax(tmp_path, script):
    starts, stdout = _starts(tmp_path, app_command(script, "--helpshort"), "jax")
    assert starts == ["unset", "glibc.malloc.hugetlb=1"]
    assert "--" in stdout  # the help, printed once, by the restarted process
