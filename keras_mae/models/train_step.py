"""The MAE train and test steps, written once for the three backends.

A step reads top to bottom: the reconstruction loss (labels, when given, are
ignored), its gradients, the optimizer update, the loss metric. The loss is
scaled through `optimizer.scale_loss` (a `LossScaleOptimizer` under
mixed_float16 unscales in `apply`) and, under tf.distribute, divided by the
replica count, since replicas' gradients are summed.

What differs by backend is only how gradients are computed (`_GRADIENTS`:
tf.GradientTape, torch autograd, jax.grad, one small function each; on torch
with `jit_compile=True`, a traced graph of the same ops, `torch_captured_step`)
and where the variables live during the step (`_StepState`): on JAX the
trainer passes their values in and takes the new ones back, so the step runs
in a `keras.StatelessScope` over them; on torch the update runs under
`no_grad`.
"""

import contextlib

import keras
from keras import ops
from keras.utils import unpack_x_y_sample_weight


def train_step(model, *args):
    """`fit`'s step: `(data)`, or `(state, data)` on JAX, which also gets the new state back."""
    state, data = _state_and_data(args)
    images = _images(data)
    variables = model.trainable_variables
    with _StepState(model, state, training=True) as step:

        def scaled_loss():
            loss = model.compute_reconstruction_loss(images, training=True, noise=model.replica_noise(images))
            return model.optimizer.scale_loss(loss / _replicas()), loss

        if _captured(model):  # torch with jit_compile=True: the same loss and gradients from one traced graph
            from keras_mae.models import torch_captured_step

            grads, loss = torch_captured_step.gradients(model, images)
        else:
            grads, loss = _GRADIENTS[_backend()](scaled_loss, variables, step)
        step.apply(model.optimizer, grads, variables)
        model.loss_tracker.update_state(ops.stop_gradient(loss))
        logs = _logs(model)
    return step.returned(logs)


def test_step(model, *args):
    """`evaluate`'s step: the loss on the model's fixed evaluation masks (`eval_mask_seed`)."""
    state, data = _state_and_data(args)
    images = _images(data)
    with _StepState(model, state, training=False) as step:
        loss = model.compute_reconstruction_loss(images, training=False, noise=model.evaluation_noise(images))
        model.loss_tracker.update_state(loss)
        logs = _logs(model)
    return step.returned(logs)


_NO_WEIGHTS = ("MaskedAutoencoder does not weight its loss by sample_weight (or class_weight): the loss is the mean "
               "over the batch's masked patches, as in the official code. Received {}; pass images, or (images, "
               "labels), and no sample_weight or class_weight.")


def refuse_weights(fit_arguments):
    """A one-line ValueError if `fit` / `evaluate` keyword arguments give sample or class weights."""
    given = [name for name in ("sample_weight", "class_weight") if fit_arguments.get(name) is not None]
    if given:
        raise ValueError(_NO_WEIGHTS.format(" and ".join(f"a {name}" for name in given)))


def refuse_uint8_where_collectives_cannot(model, data):
    """A one-line ValueError if `data` (`fit`'s or `evaluate`'s x: arrays or a tf.data.Dataset) holds uint8 images
    where the engine cannot take them (`keras_mae.distribution.takes_uint8_batches`), rather than TensorFlow's error
    on its op."""
    from keras_mae.distribution import takes_uint8_batches

    if keras.backend.backend() != "tensorflow" or takes_uint8_batches(model.distribute_strategy):
        return
    spec = getattr(data, "element_spec", data)
    dtypes = [keras.backend.standardize_dtype(x.dtype) for x in keras.tree.flatten(spec) if hasattr(x, "dtype")]
    if "uint8" in dtypes:
        raise ValueError("MaskedAutoencoder cannot take uint8 batches under tf.distribute's "
                         "MultiWorkerMirroredStrategy or TPUStrategy: Keras's TensorFlow trainer averages the first "
                         "batch over the workers with a collective "
                         "that takes no uint8. Normalise on the host instead (make_pretrain_dataset(..., "
                         "normalize=True), the default).")


def _images(data):
    """The images of a batch: `images` or `(images, labels)` (labels unused); sample weights are refused."""
    images, _, sample_weight = unpack_x_y_sample_weight(data)
    if sample_weight is not None:
        raise ValueError(_NO_WEIGHTS.format("a sample_weight in the data"))
    return images


def _captured(model):
    """Whether the torch backend's step runs as a traced graph (`torch_captured_step`): `jit_compile=True`."""
    return _backend() == "torch" and model.jit_compile is True


def _tf_gradients(loss_fn, variables, step):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        scaled, loss = loss_fn()
    return tape.gradient(scaled, variables), loss


def _torch_gradients(loss_fn, variables, step):
    import torch

    for variable in variables:
        variable.value.grad = None
    with torch.enable_grad():
        scaled, loss = loss_fn()
        scaled.backward()
    return [variable.value.grad for variable in variables], loss


def _jax_gradients(loss_fn, variables, step):
    import jax

    def pure(values):
        with step.bound(zip(variables, values)) as scope:
            scaled, loss = loss_fn()
        return scaled, (loss, [scope.get_current_value(v) for v in step.non_trainable])

    (_, (loss, non_trainable)), grads = jax.value_and_grad(pure, has_aux=True)([v.value for v in variables])
    for variable, value in zip(step.non_trainable, non_trainable):
        variable.assign(value)  # random-masking seed states: recorded in the step's scope
    return grads, loss


_GRADIENTS = {"tensorflow": _tf_gradients, "jax": _jax_gradients, "torch": _torch_gradients}


class _StepState:
    """Where the variables live during a step: in place, or (JAX) as values in a `keras.StatelessScope`."""

    def __init__(self, model, state, training):
        self.state = state
        self._context = contextlib.ExitStack()
        if state is None:  # variables in place: nothing to collect (and no per-step walk of the layers on torch)
            return
        # JAX: traced once; the groups are the trainer's state layout.
        self.non_trainable = model.non_trainable_variables
        self.groups = [model.trainable_variables, self.non_trainable]
        self.groups += [model.optimizer.variables] if training else []
        self.groups += [model.metrics_variables]
        self.mapping = {id(v): (v, x) for vs, xs in zip(self.groups, state) for v, x in zip(vs, xs)}

    def bound(self, overrides):
        """A StatelessScope over the step's current values (JAX), with `overrides` (variable, value) on top."""
        current = [(v, self._scope.get_current_value(v)) for v, _ in self.mapping.values()]
        return keras.StatelessScope(state_mapping=[*current, *overrides])

    def __enter__(self):
        self._scope = None
        if self.state is not None:
            self._scope = self._context.enter_context(
                keras.StatelessScope(state_mapping=list(self.mapping.values())))
        elif _backend() == "torch":
            import torch

            self._context.enter_context(torch.no_grad())
        return self

    def __exit__(self, *exc):
        return self._context.__exit__(*exc)

    def apply(self, optimizer, grads, variables):
        if self.state is None:
            optimizer.apply(grads, variables)
            return
        # On JAX the optimizer's stateless form: a LossScaleOptimizer branches on finite gradients with
        # ops.cond, which cannot update variables in place under jit.
        values, optimizer_values = optimizer.stateless_apply(
            [v.value for v in optimizer.variables], grads, [v.value for v in variables])
        for variable, value in zip([*variables, *optimizer.variables], [*values, *optimizer_values]):
            variable.assign(value)

    def returned(self, logs):
        """The step's return value: the logs, and on JAX the new values of every group of variables."""
        if self.state is None:
            return logs
        return logs, tuple([self._scope.get_current_value(v) for v in group] for group in self.groups)


def _logs(model):
    """The step's logs: the running loss (of shape [1] across tf.distribute workers: Keras 3's fit reduces their
    step outputs over axis 0, which a scalar lacks, tensorflow/tensorflow#72388)."""
    loss = model.loss_tracker.result()
    return {"loss": ops.reshape(loss, (1,)) if _tf_workers() > 1 else loss}


def _tf_workers():
    if _backend() != "tensorflow":
        return 1
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs)


def _state_and_data(args):
    return (args[0], args[1]) if len(args) == 2 else (None, args[0])


def _replicas():
    if _backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def _backend():
    name = keras.backend.backend()
    if name not in _GRADIENTS:
        raise ValueError(f"keras_mae trains on the tensorflow, jax and torch backends; KERAS_BACKEND is {name!r}.")
    return name
