"""Real multi-process jobs on this CPU, one per engine (torchrun + gloo, JAX's coordinator, TF_CONFIG workers):
each equals one process on the same global batch."""

import json
import os
from concurrent.futures import ThreadPoolExecutor

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
SMOKE = os.path.join(ROOT, "apps", "configs", "smoke.flags")


def _pretrain_job(workdir, data_path, env=None):
    distribution = multiprocess.DISTRIBUTION[keras.backend.backend()]
    return multiprocess.launch(
        KILLER if env else PRETRAIN, *([PRETRAIN] if env else []), f"--flagfile={SMOKE}",
        f"--dataset={data_path}", "--epochs=3", "--steps_per_epoch=3", "--verbose=0", "--reconstruction_every=100",
        f"--workdir={workdir}", f"--distribution={distribution}", env=env)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """`(data, workdir)`: 48 + 16 random 28x28 images, and a 2-process pretraining on them that nothing stopped."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    rng = np.random.default_rng(0)
    data_path = directory / "images.npz"
    np.savez(data_path, x_train=(rng.uniform(size=(48, 28, 28)) * 255).astype("uint8"),
             x_test=(rng.uniform(size=(16, 28, 28)) * 255).astype("uint8"))
    multiprocess.check(_pretrain_job(directory / "whole", data_path))
    return data_path, directory / "whole"


def _final_weights(workdir):
    import h5py

    with h5py.File(os.path.join(workdir, "checkpoints", "epoch_0003.weights.h5")) as file:
        values = []
        file.visititems(lambda name, item: values.append((name, item[()])) if isinstance(item, h5py.Dataset) else None)
    return dict(values)


@pytest.mark.slow
@pytest.mark.faults
def test_a_two_process_pretraining_writes_once_and_resumes_after_one_process_is_killed(tmp_path, uninterrupted):
    data_path, whole = uninterrupted
    killed = tmp_path / "killed"
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
    assert sum(out.count("Resuming from epoch") for _, out, _ in resumed) == 1  # process 0 reports, alone
    rows = [json.loads(line) for line in (killed / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    expected, got = _final_weights(whole), _final_weights(killed)
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def _read_json(path):
    return json.loads(path.read_text())


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the downstream apps run several processes on torch DDP")
def test_downstream_apps_under_ddp_train_once_and_evaluate_exactly(tmp_path):
    import keras_mae

    rng = np.random.default_rng(0)
    data_path = tmp_path / "labelled.npz"
    np.savez(data_path, x_train=(rng.uniform(size=(64, 16, 16)) * 255).astype("uint8"), y_train=rng.integers(0, 3, 64),
             x_test=(rng.uniform(size=(21, 16, 16)) * 255).astype("uint8"), y_test=np.arange(21) % 3)
    keras.utils.set_random_seed(0)
    encoder = keras_mae.ViTEncoder(image_size=16, patch_size=4, num_channels=1, hidden_dim=16, num_layers=1,
                                   num_heads=2, mlp_dim=32)
    encoder.save(tmp_path / "encoder.keras")
    data_flags = [f"--dataset={data_path}", "--train_split=train", "--eval_split=test"]
    # 21 test images in batches of 6: the last batch is partial, the two processes' shares uneven (12 and 9).
    # Jobs that do not depend on each other run at the same time (most of each process is imports).
    probe, tuned, double = tmp_path / "probe", tmp_path / "finetune", tmp_path / "evaluate_ddp"
    with ThreadPoolExecutor(3) as pool:
        jobs = [pool.submit(multiprocess.launch, "linear_probe.py", f"--encoder={tmp_path / 'encoder.keras'}",
                            *data_flags, "--epochs=2", "--warmup_epochs=0", "--batch_size=16",
                            "--features_batch_size=6", "--verbose=0", f"--workdir={probe}", "--distribution=ddp"),
                pool.submit(multiprocess.launch, "finetune.py", f"--encoder={tmp_path / 'encoder.keras'}",
                            *data_flags, "--epochs=1", "--warmup_epochs=0", "--batch_size=16", "--eval_batch_size=6",
                            "--verbose=0", f"--workdir={tuned}", "--distribution=ddp")]
        for job in jobs:
            multiprocess.check(job.result())
        # Then each model evaluated by one process, and evaluate.py itself across two processes.
        singles = [pool.submit(run_app, "evaluate.py", f"--model={workdir / model}", *data_flags, "--batch_size=6",
                               f"--workdir={tmp_path / f'{workdir.name}_single'}")
                   for workdir, model in ((probe, "probe.keras"), (tuned, "classifier.keras"))]
        evaluate_ddp = pool.submit(multiprocess.launch, "evaluate.py", f"--model={probe / 'probe.keras'}",
                                   *data_flags, "--batch_size=6", f"--workdir={double}", "--distribution=ddp")
        for job in singles:
            job.result()
        multiprocess.check(evaluate_ddp.result())
    assert [json.loads(line)["epoch"] for line in (probe / "log.jsonl").read_text().splitlines()] == [1, 2]

    for workdir, result, metric in ((probe, "linear_probe.json", ("pretrained", "top1")),
                                    (tuned, "finetune.json", ("top1",))):
        # The job's evaluate (metric states summed over the processes) equals one process evaluating its model.
        report = _read_json(tmp_path / f"{workdir.name}_single" / "report.json")
        recorded = _read_json(workdir / result)
        for key in metric:
            recorded = recorded[key]
        assert report["num_images"] == 21
        assert recorded == pytest.approx(report["accuracy"], abs=1e-7)
        # The job's report, from every process's predictions, is the one process's.
        assert _read_json(workdir / "report" / "report.json")["accuracy"] == report["accuracy"]

    # evaluate.py across two processes gives one process's report and predictions, image by image (the
    # probabilities to float rounding: the processes' forward passes run on batches of 3, not 6).
    single = tmp_path / "probe_single"
    _assert_close(_read_json(double / "report.json"), _read_json(single / "report.json"))
    rows = [np.genfromtxt(d / "predictions.csv", delimiter=",", skip_header=1) for d in (double, single)]
    np.testing.assert_array_equal(rows[0][:, :3], rows[1][:, :3])  # index, true and predicted class
    np.testing.assert_allclose(rows[0][:, 3:], rows[1][:, 3:], atol=2e-6)


def _assert_close(a, b, path="report"):
    """Equal structures; ints and strings equal, floats to 1e-6."""
    assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9), path
    else:
        assert a == b, path


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="TF workers do not agree on a stop signal")
def test_a_sigterm_to_one_process_stops_every_process_after_the_same_step(tmp_path, uninterrupted):
    data_path, whole = uninterrupted
    stopped = tmp_path / "stopped"
    # SIGTERM reaches process 1 alone, after step 5 (2 steps into epoch 2): both stop there, process 0 checkpoints.
    results = _pretrain_job(stopped, data_path, env={"KILL_RANK": "1", "KILL_AT_STEP": "5", "KILL_SIGNAL": "SIGTERM"})
    assert any(code for code, _, _ in results)
    assert "stopped by SIGTERM after epoch 1 and 2 steps of epoch 2" in "".join(err for _, _, err in results)
    assert os.path.isfile(stopped / "checkpoints" / "epoch_0001_step_000002.weights.h5")
    resumed = multiprocess.check(_pretrain_job(stopped, data_path))
    assert "Resuming from epoch 1, 2 steps into epoch 2" in resumed[0][1]
    expected, got = _final_weights(whole), _final_weights(stopped)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
