"""Real multi-process jobs on this CPU, one per engine (torchrun + gloo, JAX's coordinator, TF_CONFIG workers):
each equals one process on the same global batch."""

import json
import os

import keras
import numpy as np
import pytest

from tests import multiprocess
from tests.run_app import ROOT, run_app

CHECK = os.path.join(ROOT, "tests", "multiprocess_check.py")


@pytest.mark.slow
def test_two_processes_train_as_one_on_the_global_batch(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    run_app(CHECK, "none", one, env={"PYTHONPATH": ROOT})
    multiprocess.check(multiprocess.launch(CHECK, multiprocess.DISTRIBUTION[keras.backend.backend()],
                                           two))
    single, double = (json.loads((d / "result.json").read_text()) for d in (one, two))
    assert (single["replicas"], double["replicas"]) == (1, 2)
    assert double["steps"] == single["steps"] == 6
    # Masks are drawn for the global batch, so the two processes' losses are the one process's.
    for key in ("loss", "val_loss"):
        assert double[key] == pytest.approx(single[key], rel=1e-5), key
    assert double["eval_loss"] == pytest.approx(single["eval_loss"], rel=1e-5)
    a, b = np.load(one / "weights.npz"), np.load(two / "weights.npz")
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-4
    assert max(float(np.abs(a[k]).max()) for k in a) > 0.5  # the weights are real ones, not zeros


KILLER = os.path.join(ROOT, "tests", "kill_at_step.py")
PRETRAIN = os.path.join(ROOT, "apps", "pretrain.py")


def _pretrain_job(workdir, data_path, env=None):
    distribution = multiprocess.DISTRIBUTION[keras.backend.backend()]
    return multiprocess.launch(
        KILLER if env else PRETRAIN, *([PRETRAIN] if env else []), "--flagfile=" + os.path.join(ROOT, "apps", "configs", "smoke.flags"),
        f"--dataset={data_path}", "--epochs=3", "--steps_per_epoch=3", "--verbose=0", "--reconstruction_every=100",
        f"--workdir={workdir}", f"--distribution={distribution}", env=env)


def _final_weights(workdir):
    import h5py

    with h5py.File(os.path.join(workdir, "checkpoints", "epoch_0003.weights.h5")) as file:
        values = []
        file.visititems(lambda name, item: values.append((name, item[()])) if isinstance(item, h5py.Dataset) else None)
    return dict(values)


@pytest.mark.slow
@pytest.mark.faults
def test_a_two_process_pretraining_writes_once_and_resumes_after_one_process_is_killed(tmp_path):
    rng = np.random.default_rng(0)
    data_path = tmp_path / "images.npz"
    np.savez(data_path, x_train=(rng.uniform(size=(48, 28, 28)) * 255).astype("uint8"),
             x_test=(rng.uniform(size=(16, 28, 28)) * 255).astype("uint8"))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    multiprocess.check(_pretrain_job(whole, data_path))
    # One writer: one log row per epoch, one checkpoint per epoch, one set of exports.
    rows = [json.loads(line) for line in (whole / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert sorted(os.listdir(whole / "checkpoints")) == [f"epoch_000{e}.{x}" for e in (1, 2, 3)
                                                         for x in ("json", "weights.h5")]
    assert (whole / "model.keras").is_file() and (whole / "run.json").is_file()

    # Process 1 dies after step 5 (inside epoch 2, after epoch 1's checkpoint); the job stops.
    results = _pretrain_job(killed, data_path, env={"KILL_RANK": "1", "KILL_AT_STEP": "5"})
    assert any(code for code, _, _ in results)
    assert not (killed / "model.keras").exists()
    assert os.path.isfile(killed / "checkpoints" / "epoch_0001.weights.h5")
    # The same command resumes every process from epoch 1 and ends where the uninterrupted job did.
    resumed = multiprocess.check(_pretrain_job(killed, data_path))
    assert "Resuming from epoch 1" in resumed[0][1]
    rows = [json.loads(line) for line in (killed / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    expected, got = _final_weights(whole), _final_weights(killed)
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
