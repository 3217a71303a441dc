"""The MAE loss and gradients on the torch backend as one traced graph of ATen ops (`compile(jit_compile=True)`).

In eager PyTorch every Keras op pays Keras's Python on the host (`Layer.__call__`,
argument checks, variable reads): a ViT-B MAE step is about 2,700 ATen ops, so
on a GPU the host, not the kernels, sets the pace (BENCHMARKS.md, "ViT-B/16 at
224 in bf16 on one GPU"). Keras's own `jit_compile=True` on torch,
`torch.compile` of the step, does not help: dynamo breaks its graph at Keras's
layer calls and runs them eagerly, 9% slower.

Here the forward pass, the reconstruction loss and the backward pass of
`torch.autograd.grad` are traced once per input shape with `make_fx`, which
records what reaches the ATen dispatcher and none of the Python around it, as
`jax.jit` traces. The result, one `torch.fx.GraphModule` with the variables'
values, the images and the masking noise as inputs, is compiled by
TorchInductor (fused elementwise kernels; on a GPU, CUDA graphs take the
launches off the host too) or, with `compiler="fx"`, run as it is: the same
kernels in the same order as the plain step, without Keras's Python.

What stays eager, as in the plain step: drawing the masking noise (the same
calls on the masking layer's seed generator, so the same masks), the
optimizer's update (`optimizer.apply`: gradient accumulation, loss scaling,
torch DDP's gradient averaging and the fused CPU AdamW apply unchanged) and
the loss metric. Randomness inside the forward pass (drop path) would be
traced as a constant, so `drop_path_rate > 0` is refused. `tests/models/
test_torch_captured_step.py` checks losses and weights after several steps
against the plain step.
"""

import keras
from absl import logging

COMPILERS = ("inductor", "fx")


def gradients(model, images):
    """`(grads, loss)` of `model`'s train step on `images`, from its captured graph (made on first use)."""
    captured = getattr(model, "_captured_gradients", None)
    if captured is None or captured.optimizer is not model.optimizer:
        captured = model._captured_gradients = CapturedGradients(model)
    return captured(images)


class CapturedGradients:
    """`(images) -> (grads, loss)` of a `MaskedAutoencoder` on the torch backend, traced once per input shape.

    Args:
        model: a built, compiled `MaskedAutoencoder`.
        compiler: "inductor" compiles the traced graph with TorchInductor ("reduce-overhead", CUDA graphs, on a
            GPU), falling back to "fx" with a warning where it cannot; "fx" runs the traced graph as it is.
    """

    def __init__(self, model, compiler="inductor"):
        if compiler not in COMPILERS:
            raise ValueError(f"compiler must be one of {COMPILERS}. Received: compiler={compiler!r}")
        check_capturable(model)
        self.model = model
        self.optimizer = model.optimizer
        self.compiler = compiler
        self._graphs = {}

    def __call__(self, images):
        import torch

        model = self.model
        images = keras.ops.convert_to_tensor(images)
        noise = model.replica_noise(images)
        if noise is None:  # what the masking layer would draw for itself, from the same generator
            noise = model.masking.sample_noise(images.shape[0], model.encoder.num_patches)
        trainable = model.trainable_variables
        others = [*model.non_trainable_variables, *model.optimizer.variables]
        inputs = ([v.value for v in trainable], [v.value for v in others], images, noise)
        key = (tuple(images.shape), images.dtype, images.device, noise.dtype, tuple(map(id, trainable)),
               tuple(map(id, others)))
        with torch.no_grad():
            if key in self._graphs:
                loss, grads = self._graphs[key](*inputs)
            else:
                loss, grads = self._first_call(key, trainable, others, inputs)
        return list(grads), loss

    def _first_call(self, key, trainable, others, inputs):
        import torch

        traced = self._trace(trainable, others, inputs)
        if self.compiler == "inductor":
            on_gpu = inputs[2].device.type == "cuda"
            compiled = torch.compile(traced, fullgraph=True, dynamic=False,
                                     mode="reduce-overhead" if on_gpu else None)
            try:
                outputs = compiled(*inputs)  # compiles now
                self._graphs[key] = compiled
                return outputs
            except Exception as error:  # no C++ compiler, an unsupported op: the traced graph still runs
                logging.warning("TorchInductor could not compile the MAE train step (%s: %s); running the traced "
                                "graph uncompiled.", type(error).__name__, str(error).split("\n")[0][:200])
        self._graphs[key] = traced
        return traced(*inputs)

    def _trace(self, trainable, others, inputs):
        import torch
        from torch.fx.experimental.proxy_tensor import make_fx

        model = self.model

        def loss_and_grads(trainable_values, other_values, images, noise):
            values = [value.detach().requires_grad_() for value in trainable_values]
            mapping = [*zip(trainable, values), *zip(others, other_values)]
            with keras.StatelessScope(state_mapping=mapping), torch.enable_grad():
                loss = model.compute_reconstruction_loss(images, training=True, noise=noise)
                scaled = model.optimizer.scale_loss(loss)
            grads = torch.autograd.grad(scaled, values, allow_unused=True)
            return loss.detach(), [torch.zeros_like(v) if g is None else g for v, g in zip(values, grads)]

        # "fake": no value is computed while tracing, so code reading one on the host fails here, loudly, instead
        # of being frozen into the graph as a constant.
        return make_fx(loss_and_grads, tracing_mode="fake")(*inputs)


def check_capturable(model):
    """Raises a one-line ValueError where the captured step would not equal the plain one."""
    if keras.backend.backend() != "torch":
        raise ValueError(f"The captured train step is the torch backend's; KERAS_BACKEND is "
                         f"{keras.backend.backend()!r}, where jit_compile=True compiles with XLA.")
    if model.drop_path_rate:
        raise ValueError(f"jit_compile=True on the torch backend traces the train step once, which would freeze "
                         f"drop path's random draws: drop_path_rate={model.drop_path_rate}. Use drop_path_rate=0 "
                         "(the paper's pretraining) or jit_compile=False.")
