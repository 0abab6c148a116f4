"""effnet_jax: EfficientNet and compound model scaling in JAX/Flax."""

__version__ = "0.1.0"
