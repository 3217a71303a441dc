"""Multi-device training: one step on 2 devices equals one step on 1 device for the same global batch."""

import json
import os

import keras
import pytest

from keras_mae.distribution import setup_distribution
from tests.run_app import ROOT, run_app

NATIVE = {"jax": "data_parallel", "tensorflow": "mirrored"}


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() not in NATIVE, reason="no multi-device fit on this backend")
def test_two_devices_match_one_device():
    name = NATIVE[keras.backend.backend()]
    result = run_app(os.path.join(ROOT, "tests", "distribution_check.py"), name, check=False, timeout=300,
                     env={"PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["loss_2"] == pytest.approx(report["loss_1"], rel=1e-5)
    assert report["max_weight_diff"] < 1e-4 * report["moved"] + 1e-5


def test_unsupported_combinations_are_clear_errors():
    backend = keras.backend.backend()
    with pytest.raises(ValueError, match="under torchrun" if backend == "torch" else "needs KERAS_BACKEND=torch"):
        setup_distribution("ddp")  # (no torchrun variables in a plain test process)
    other = "mirrored" if backend != "tensorflow" else "data_parallel"
    with pytest.raises(ValueError, match=f"distribution='{other}' needs KERAS_BACKEND="):
        setup_distribution(other)
    with pytest.raises(ValueError, match="Unknown distribution 'horovod'"):
        setup_distribution("horovod")
    scope, replicas = setup_distribution("none")
    assert replicas == 1
