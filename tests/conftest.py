"""Shared fixtures: a tiny MAE config that builds and trains in well under a second."""

import atexit
import os
import shutil
import signal
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# JAX: one persistent compilation cache, tiny programs included, for the apps and jobs the tests start in fresh
# processes (they inherit this environment): each would compile the same programs again (a JAX smoke pretraining
# on this CPU: 28 s cold, 14 s warm). Set after keras imported jax, which reads these once, so this process keeps
# its in-memory cache alone (writing every small program to disk made the in-process tests 7% slower). A cache the
# caller set is kept.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _jax_cache = tempfile.mkdtemp(prefix="keras_mae_tests_jax_cache_")
    atexit.register(shutil.rmtree, _jax_cache, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_jax_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

TINY = dict(
    image_size=(8, 12), patch_size=4, num_channels=3, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32,
    decoder_hidden_dim=8, decoder_num_layers=1, decoder_num_heads=2, decoder_mlp_dim=16,
)


@pytest.fixture
def tiny_config():
    return dict(TINY)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _signal_handlers_kept():
    """A test that leaves SIGINT's or SIGTERM's handler changed fails (and the handler is put back), so the next test
    in the same worker process does not inherit it."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    changed = {signal.Signals(signum).name: signal.getsignal(signum) for signum, handler in before.items()
               if signal.getsignal(signum) is not handler}
    for signum, handler in before.items():
        if handler is not None:  # None: set outside Python, which cannot be put back from here
            signal.signal(signum, handler)
    assert not changed, f"the test left these signal handlers changed: {changed}"


@pytest.fixture(autouse=True)
def _reset_keras():
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()
