"""Tests for keras_mae.optimizers: exact parity with the official update rules."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_mae.optimizers import (
    LARS,
    LayerDecayAdamW,
    WarmupCosineDecay,
    layer_decay_multipliers,
    make_pretrain_optimizer,
    weight_decay_exclusions,
)
from keras_mae.optimizers.torch_fused_adamw import can_fuse, fuse_adamw_update
from tests.run_app import backend_independent


def _np(x):
    return ops.convert_to_numpy(x)


def _round_trip(obj):
    config = obj.get_config()
    restored = type(obj).from_config(config)
    assert restored.get_config() == config
    serialized = keras.saving.serialize_keras_object(obj)
    assert type(keras.saving.deserialize_keras_object(serialized)) is type(obj)
    return restored


# === LARS ===


def _lars_reference(params, grads_per_step, lr, wd, momentum, trust):
    """numpy transcription of facebookresearch/mae util/lars.py."""
    params = [p.astype(np.float64) for p in params]
    mus = [np.zeros_like(p) for p in params]
    for grads in grads_per_step:
        for i, (p, dp) in enumerate(zip(params, grads)):
            if p.ndim > 1:
                dp = dp + wd * p
                param_norm, update_norm = np.linalg.norm(p), np.linalg.norm(dp)
                q = trust * param_norm / update_norm if param_norm > 0 and update_norm > 0 else 1.0
                dp = dp * q
            mus[i] = momentum * mus[i] + dp
            params[i] = p - lr * mus[i]
    return params


def test_lars_matches_official_update_for_two_steps():
    rng = np.random.default_rng(0)
    params = [
        rng.normal(size=(3, 4)).astype("float32"),  # weight: decay + trust ratio
        rng.normal(size=(4,)).astype("float32"),  # bias: plain momentum SGD
        np.zeros((2, 2), "float32"),  # zero norm: trust ratio is 1
    ]
    grads = [[rng.normal(size=p.shape).astype("float32") for p in params] for _ in range(2)]
    kwargs = dict(learning_rate=0.5, weight_decay=0.1, momentum=0.9, trust_coefficient=0.01)
    variables = [keras.Variable(p) for p in params]
    optimizer = LARS(**kwargs)
    for step_grads in grads:
        optimizer.apply([ops.convert_to_tensor(g) for g in step_grads], variables)
    expected = _lars_reference(params, grads, lr=0.5, wd=0.1, momentum=0.9, trust=0.01)
    for variable, want in zip(variables, expected):
        np.testing.assert_allclose(_np(variable), want, rtol=1e-5, atol=1e-6)


def test_lars_config_round_trip_and_validation():
    optimizer = LARS(learning_rate=0.2, weight_decay=0.01, trust_coefficient=0.002, clipnorm=1.0)
    restored = _round_trip(optimizer)
    assert (restored.weight_decay, restored.momentum) == (0.01, 0.9)
    with pytest.raises(ValueError, match="momentum"):
        LARS(momentum=1.5)


# === WarmupCosineDecay ===


def _official_lr(step, peak, warmup, total, low):
    step = min(step, total)
    if step < warmup:
        return peak * step / warmup
    return low + (peak - low) * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / (total - warmup)))


# One case on every backend (the schedule runs in each optimizer); the others are arithmetic, on one backend.
@pytest.mark.parametrize("peak, warmup, low", [(0.1, 10, 1e-3)] + [
    pytest.param(*case, marks=backend_independent)
    for case in [(0.1, 10, 0.0), (0.1, 0, 0.0), (0.1, 0, 1e-3), (1e-3, 1, 1e-6), (0.0, 5, 0.0), (1e-4, 3, 1e-3)]])
def test_warmup_cosine_is_keras_cosine_decay_and_the_official_formula(peak, warmup, low):
    """Every step, past the end too: Keras's CosineDecay with warmup, and the official per-step formula."""
    schedule = WarmupCosineDecay(peak, warmup_steps=warmup, total_steps=50, min_learning_rate=low)
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    keras_schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=50 - warmup, alpha=low / peak if peak else 0.0, warmup_target=peak,
        warmup_steps=warmup)
    # Each side of the warm-up's end and of the decay's, and past it.
    for step in sorted({0, 1, 2, warmup - 1, warmup, warmup + 1, 25, 48, 49, 50, 51, 1000} - {-1}):
        got = float(_np(schedule(step)))
        assert got == float(_np(keras_schedule(step)))
        np.testing.assert_allclose(got, _official_lr(step, peak, warmup, 50, low), rtol=1e-5, atol=1e-9)
    _round_trip(schedule)


def test_warmup_cosine_at_imagenet_scale_and_its_saved_config():
    """The official fine-tuning length (ViT-B: 100 epochs of 1251 steps, 5 warm-up): still the formula to 1e-9."""
    peak, warmup, total, low = 2e-3, 5 * 1251, 100 * 1251, 1e-6
    schedule = WarmupCosineDecay(peak, warmup, total, low)
    for step in [0, 1, warmup - 1, warmup, warmup + 1, 50_000, total - 1, total, total + 7]:
        np.testing.assert_allclose(float(_np(schedule(step))), _official_lr(step, peak, warmup, total, low), atol=1e-9)
    # The config keras_mae 0.1 wrote still loads, as the same schedule.
    config = {"peak_learning_rate": peak, "warmup_steps": warmup, "total_steps": total, "min_learning_rate": low}
    assert schedule.get_config() == config
    restored = keras.saving.deserialize_keras_object(
        {"module": "keras_mae.optimizers.schedules", "class_name": "WarmupCosineDecay", "config": config,
         "registered_name": "keras_mae>WarmupCosineDecay"})
    assert type(restored) is WarmupCosineDecay and float(_np(restored(warmup))) == pytest.approx(peak)


def test_warmup_cosine_validation_and_use_in_optimizer():
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosineDecay(0.1, warmup_steps=10, total_steps=10)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosineDecay(0.1, warmup_steps=-1, total_steps=10)
    with pytest.raises(ValueError, match="min_learning_rate"):  # Keras's alpha = min / peak
        WarmupCosineDecay(0.0, warmup_steps=1, total_steps=10, min_learning_rate=1e-6)
    optimizer = LARS(learning_rate=WarmupCosineDecay(1.0, 4, 8))
    variable = keras.Variable(np.ones((2,), "float32"))
    for _ in range(2):
        optimizer.apply([ops.ones((2,))], [variable])
    np.testing.assert_allclose(float(_np(optimizer.learning_rate)), 0.5, rtol=1e-6)


# === Pretraining AdamW and its weight-decay exclusions ===


class Token(keras.layers.Layer):
    def build(self, input_shape):
        self.cls_token = self.add_weight((1, 1, 4), initializer="ones", name="cls_token")

    def call(self, x):
        return x + ops.mean(self.cls_token)


def _toy_model():
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(4, 2, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = Token(name="token")(x)
    x = keras.layers.Dense(3, name="dense")(keras.layers.Flatten()(x))
    return keras.Model(inputs, x)


def test_weight_decay_exclusions_follow_timm_add_weight_decay():
    model = _toy_model()
    excluded = {v.path for v in weight_decay_exclusions(model)}
    assert excluded == {
        "conv/bias", "bn/gamma", "bn/beta", "ln/gamma", "ln/beta", "dense/bias"
    }
    # Pretraining decays the (1, 1, D) token; fine-tuning skips it by name.
    skipped = {v.path for v in weight_decay_exclusions(model, skip_names=["cls_token"])}
    assert skipped == excluded | {"token/cls_token"}


def test_make_pretrain_optimizer_decays_only_matrices_and_tokens():
    model = _toy_model()
    optimizer = make_pretrain_optimizer(model, learning_rate=0.1, weight_decay=0.5)
    config = optimizer.get_config()
    assert (config["beta_1"], config["beta_2"], config["epsilon"]) == (0.9, 0.95, 1e-8)
    before = {v.path: _np(v).copy() for v in model.trainable_variables}
    # Zero gradients: Adam's step is 0, only the decoupled decay moves weights.
    optimizer.apply([ops.zeros(v.shape) for v in model.trainable_variables], model.trainable_variables)
    excluded = {v.path for v in weight_decay_exclusions(model)}
    for v in model.trainable_variables:
        factor = 1.0 if v.path in excluded else 1.0 - 0.1 * 0.5
        np.testing.assert_allclose(_np(v), before[v.path] * factor, rtol=1e-6, err_msg=v.path)


def test_make_pretrain_optimizer_needs_a_built_model():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="build it"):
        make_pretrain_optimizer(model, learning_rate=1e-3)


# === Fused AdamW update on torch (keras_mae/optimizers/torch_fused_adamw.py) ===


def _train_adamw(fused, accumulation=None, layer_decay=False):
    keras.utils.set_random_seed(0)
    model = _toy_model()
    schedule = WarmupCosineDecay(1e-2, 2, 8)
    if layer_decay:  # the fine-tuning optimizer: three lr multipliers, and the exclusions
        multipliers = {v.path: [1.0, 0.5, 0.25][i % 3] for i, v in enumerate(model.trainable_variables)}
        optimizer = LayerDecayAdamW(lr_multipliers=multipliers, learning_rate=schedule, weight_decay=0.3,
                                    beta_2=0.999, epsilon=1e-8, gradient_accumulation_steps=accumulation)
        optimizer.exclude_from_weight_decay(var_list=weight_decay_exclusions(model))
        if fused:
            fuse_adamw_update(optimizer)
    else:
        optimizer = make_pretrain_optimizer(model, schedule, weight_decay=0.3, gradient_accumulation_steps=accumulation,
                                            fused=fused)
    rng = np.random.default_rng(3)
    variables = model.trainable_variables
    for step in range(6):
        # Magnitudes from 1e-9 (where Keras's epsilon placement and torch's differ by 1/sqrt(1 - beta_2^t))
        # to 1, a different one per variable and step.
        scales = 10.0 ** rng.uniform(-9, 0, size=len(variables))
        grads = [(s * rng.normal(size=v.shape)).astype("float32") for s, v in zip(scales, variables)]
        optimizer.apply([ops.convert_to_tensor(g) for g in grads], variables)
    return optimizer, [_np(v) for v in variables], [_np(v) for v in optimizer.variables]


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="the fused kernel is torch's: the next test checks that it is refused elsewhere")
@pytest.mark.parametrize("accumulation", [None, 2])
@pytest.mark.parametrize("layer_decay", [False, True], ids=["adamw", "layer_decay_adamw"])
def test_fused_adamw_update_equals_keras_update(accumulation, layer_decay):
    plain, plain_weights, plain_slots = _train_adamw(False, accumulation, layer_decay)
    fused, fused_weights, fused_slots = _train_adamw(True, accumulation, layer_decay)
    # The fused kernel is taken on torch (CI and this machine compute on the CPU).
    assert can_fuse(fused) and "_backend_update_step" in vars(fused)
    assert "_backend_update_step" not in vars(plain)
    # float32 rounding of other operation orders; absolute near zero (weights that crossed it, tiny moments).
    # With beta_2 = 0.999 (fine-tuning) Keras's float32 `1 - beta_2**t` loses up to ~6e-5 of its value to
    # cancellation (the kernel's, in double, does not), so its steps differ by up to ~3e-5 relative.
    rtol = 1e-4 if layer_decay else 2e-6
    for a, b in zip(plain_weights + plain_slots, fused_weights + fused_slots):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * np.abs(a).max())
    # The instance saves as its own class (a model saved here loads anywhere).
    assert type(keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fused))) is type(plain)


def test_fused_adamw_update_is_refused_where_it_does_not_apply():
    refused = [keras.optimizers.AdamW(1e-3, amsgrad=True), keras.optimizers.Adam(1e-3),
               LayerDecayAdamW(learning_rate=1e-3, amsgrad=True), keras.optimizers.SGD(1e-3), LARS(1e-3)]
    if keras.backend.backend() != "torch":  # every optimizer, the pretraining's and fine-tuning's AdamW included
        refused += [keras.optimizers.AdamW(1e-3), LayerDecayAdamW(learning_rate=1e-3)]
        model = _toy_model()
        refused.append(make_pretrain_optimizer(model, 1e-3, weight_decay=0.3, fused=True))
    for optimizer in refused:
        assert fuse_adamw_update(optimizer) is False, type(optimizer).__name__
        assert "_backend_update_step" not in vars(optimizer)


# === Layer-wise learning-rate decay ===


def _vit_like_model():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="patch_embed")(inputs)
    x = keras.layers.Dense(4, name="blocks_0")(x)
    x = keras.layers.Dense(4, name="blocks_1")(x)
    x = keras.layers.LayerNormalization(name="fc_norm")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


def _layer_id(path):
    if path.startswith("patch_embed"):
        return 0
    if path.startswith("blocks_"):
        return int(path.split("/")[0].split("_")[1]) + 1
    return 3


def test_layer_decay_multipliers_follow_official_scales():
    model = _vit_like_model()
    multipliers = layer_decay_multipliers(model.trainable_variables, 2, 0.75, _layer_id)
    assert multipliers["patch_embed/kernel"] == pytest.approx(0.75**3)
    assert multipliers["blocks_0/bias"] == pytest.approx(0.75**2)
    assert multipliers["blocks_1/kernel"] == pytest.approx(0.75)
    assert multipliers["head/kernel"] == multipliers["fc_norm/gamma"] == 1.0
    with pytest.raises(ValueError, match="outside"):
        layer_decay_multipliers(["x"], 2, 0.75, lambda path: 4)


def test_layer_decay_adamw_equals_adamw_per_group():
    rng = np.random.default_rng(1)
    lr, wd = 0.01, 0.05
    model = _vit_like_model()
    variables = model.trainable_variables
    multipliers = layer_decay_multipliers(variables, 2, 0.75, _layer_id)
    grads = [[rng.normal(size=v.shape).astype("float32") for v in variables] for _ in range(2)]
    excluded = weight_decay_exclusions(model)
    initial = [_np(v).copy() for v in variables]

    optimizer = LayerDecayAdamW(lr_multipliers=multipliers, learning_rate=lr, weight_decay=wd)
    optimizer.exclude_from_weight_decay(var_list=excluded)
    for step_grads in grads:
        optimizer.apply([ops.convert_to_tensor(g) for g in step_grads], variables)
    result = {v.path: _np(v).copy() for v in variables}

    # Reference: one plain AdamW per multiplier group, on fresh copies.
    excluded_paths = {v.path for v in excluded}
    for m in sorted(set(multipliers.values())):
        group = [i for i, v in enumerate(variables) if multipliers[v.path] == m]
        copies = [keras.Variable(initial[i]) for i in group]
        reference = keras.optimizers.AdamW(learning_rate=lr * m, weight_decay=wd)
        reference.exclude_from_weight_decay(
            var_list=[c for c, i in zip(copies, group) if variables[i].path in excluded_paths]
        )
        for step_grads in grads:
            reference.apply([ops.convert_to_tensor(step_grads[i]) for i in group], copies)
        for c, i in zip(copies, group):
            path = variables[i].path
            np.testing.assert_allclose(result[path], _np(c), rtol=1e-5, atol=1e-7, err_msg=path)
            assert not np.allclose(result[path], initial[i])


def test_layer_decay_adamw_config_round_trip_and_unknown_paths():
    optimizer = LayerDecayAdamW(lr_multipliers={"a/kernel": 0.5}, learning_rate=1e-3, beta_2=0.99)
    restored = _round_trip(optimizer)
    assert restored.lr_multipliers == {"a/kernel": 0.5}
    with pytest.warns(UserWarning, match="match no optimized"):
        restored.build([keras.Variable(np.ones((2,), "float32"), name="b")])


# === Under model.fit, default jit_compile ===


@pytest.mark.parametrize("name", ["lars", "lars_accumulation", "pretrain_adamw", "layer_decay"])
def test_optimizers_under_fit(name):
    model = _vit_like_model()
    if name == "lars":
        optimizer = LARS(learning_rate=WarmupCosineDecay(0.5, 1, 4), weight_decay=1e-3)
    elif name == "lars_accumulation":
        optimizer = LARS(learning_rate=0.5, gradient_accumulation_steps=2)
    elif name == "pretrain_adamw":
        optimizer = make_pretrain_optimizer(model, WarmupCosineDecay(1e-2, 1, 4))
    else:
        multipliers = layer_decay_multipliers(model.trainable_variables, 2, 0.75, _layer_id)
        optimizer = LayerDecayAdamW(lr_multipliers=multipliers, learning_rate=1e-2)
    model.compile(optimizer=optimizer, loss="mse")
    before = [_np(v).copy() for v in model.trainable_variables]
    x = np.random.default_rng(2).normal(size=(8, 4)).astype("float32")
    model.fit(x, np.ones((8, 2), "float32"), batch_size=4, epochs=1, verbose=0)
    # With accumulation, `iterations` counts updates: 2 batches make 1.
    assert int(_np(optimizer.iterations)) == (1 if name == "lars_accumulation" else 2)
    for v, b in zip(model.trainable_variables, before):
        assert np.all(np.isfinite(_np(v)))
        assert not np.allclose(_np(v), b), v.path
