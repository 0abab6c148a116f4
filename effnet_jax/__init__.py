"""effnet_jax: EfficientNet and compound model scaling in JAX/Flax."""

__version__ = "0.1.0"


def __getattr__(name):
    # `effnet_jax.load_pretrained` without importing Orbax and TF on `import effnet_jax`.
    if name == "load_pretrained":
        from effnet_jax.pretrained import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'effnet_jax' has no attribute {name!r}")
