"""`get_config` as the `__init__` arguments, read back from the attributes of the same names."""

import inspect


def init_arguments(model):
    """`{name: getattr(model, name)}` for every named argument of `type(model).__init__` (not `**kwargs`).

    Each model stores its arguments under their own names, so its config is exactly
    what `__init__` takes, with no list to keep in step by hand.

    >>> from keras_mae import ViTEncoder
    >>> sorted(init_arguments(ViTEncoder(8, 4, hidden_dim=8, num_layers=1, num_heads=2, mlp_dim=16)))[:3]
    ['drop_path_rate', 'hidden_dim', 'image_size']
    """
    parameters = inspect.signature(type(model).__init__).parameters.values()
    names = [p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    return {name: getattr(model, name) for name in names}
