"""The MAE train and test steps, one per backend: the only backend-specific code of the model.

Each computes `model.compute_reconstruction_loss(images)` (labels, when given,
are ignored), differentiates it with the backend's own machinery and applies
the optimizer. Loss scaling goes through `optimizer.scale_loss` (a
`LossScaleOptimizer` under mixed_float16 unscales in `apply`); under
tf.distribute the loss is divided by the replica count before the gradient,
since replicas' gradients are summed.
"""

import keras
from keras.utils import unpack_x_y_sample_weight


def _images(data):
    images, _, _ = unpack_x_y_sample_weight(data)
    return images


def _tf_train_step(model, data):
    import tensorflow as tf

    images = _images(data)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    with tf.GradientTape() as tape:
        loss = model.compute_reconstruction_loss(images, training=True)
        scaled = model.optimizer.scale_loss(loss / replicas)
    variables = model.trainable_variables
    model.optimizer.apply(tape.gradient(scaled, variables), variables)
    model.loss_tracker.update_state(loss)
    return {"loss": model.loss_tracker.result()}


def _stateful_test_step(model, data):
    images = _images(data)
    loss = model.compute_reconstruction_loss(images, training=False, noise=model.evaluation_noise(images))
    model.loss_tracker.update_state(loss)
    return {"loss": model.loss_tracker.result()}


def _jax_train_step(model, state, data):
    import jax

    trainable, non_trainable, optimizer_vars, metrics_vars = state
    images = _images(data)

    def loss_fn(trainable, non_trainable):
        loss, non_trainable = model.stateless_reconstruction_loss(trainable, non_trainable, images, training=True)
        mapping = list(zip(model.optimizer.variables, optimizer_vars))
        with keras.StatelessScope(state_mapping=mapping):  # reads the current loss scale
            scaled = model.optimizer.scale_loss(loss)
        return scaled, (loss, non_trainable)

    (_, (loss, non_trainable)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, non_trainable)
    trainable, optimizer_vars = model.optimizer.stateless_apply(optimizer_vars, grads, trainable)
    metrics_vars = model.loss_tracker.stateless_update_state(metrics_vars, loss)
    logs = {"loss": model.loss_tracker.stateless_result(metrics_vars)}
    return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)


def _jax_test_step(model, state, data):
    trainable, non_trainable, metrics_vars = state
    images = _images(data)
    loss, non_trainable = model.stateless_reconstruction_loss(trainable, non_trainable, images, training=False,
                                                              noise=model.evaluation_noise(images))
    metrics_vars = model.loss_tracker.stateless_update_state(metrics_vars, loss)
    logs = {"loss": model.loss_tracker.stateless_result(metrics_vars)}
    return logs, (trainable, non_trainable, metrics_vars)


def _torch_train_step(model, data):
    import torch

    model.zero_grad()
    loss = model.compute_reconstruction_loss(_images(data), training=True)
    model.optimizer.scale_loss(loss).backward()
    variables = model.trainable_variables
    with torch.no_grad():
        model.optimizer.apply([v.value.grad for v in variables], variables)
    model.loss_tracker.update_state(loss.detach())
    return {"loss": model.loss_tracker.result()}


_STEPS = {
    "tensorflow": (_tf_train_step, _stateful_test_step),
    "jax": (_jax_train_step, _jax_test_step),
    "torch": (_torch_train_step, _stateful_test_step),
}


def train_step(model, *args):
    """Runs the current backend's train step: `(data)`, or `(state, data)` on JAX."""
    return _STEPS[_backend()][0](model, *args)


def test_step(model, *args):
    """Runs the current backend's test step: `(data)`, or `(state, data)` on JAX."""
    return _STEPS[_backend()][1](model, *args)


def _backend():
    name = keras.backend.backend()
    if name not in _STEPS:
        raise ValueError(f"keras_mae trains on the tensorflow, jax and torch backends; KERAS_BACKEND is {name!r}.")
    return name
