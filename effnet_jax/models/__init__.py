"""Model families. Build any of them with ``create_model(name, ...)``."""
from effnet_jax.models.efficientnet import VARIANTS, EfficientNet, MBConv
from effnet_jax.models.mobilenet import MobileNetV1, MobileNetV2, MobileNetV3
from effnet_jax.models.registry import ModelSpec, create_model, model_names, resolve_model_spec
from effnet_jax.models.resnet import ResNet

__all__ = [
    "EfficientNet", "MBConv", "MobileNetV1", "MobileNetV2", "MobileNetV3", "ResNet", "VARIANTS",
    "ModelSpec", "create_model", "model_names", "resolve_model_spec",
]
