"""Conversions to and from other libraries' models (optional dependencies, imported when used)."""

from keras_mae.interop.keras_hub import from_keras_hub, to_keras_hub

__all__ = ["from_keras_hub", "to_keras_hub"]
