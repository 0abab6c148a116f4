"""Model families. Build any of them with ``create_model(name, ...)``."""
from effnet_jax.models.efficientnet import EfficientNet, MBConv, VARIANTS
from effnet_jax.models.registry import ModelSpec, create_model, model_names, resolve_model_spec

__all__ = ["EfficientNet", "MBConv", "VARIANTS", "ModelSpec", "create_model", "model_names", "resolve_model_spec"]
