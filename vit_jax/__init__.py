"""vit_jax: Vision Transformers (ViT, ViViT) in JAX/Flax.

Entry points:
  vit_jax.models.create_model(name, num_classes=..., **overrides)

Importing any part of vit_jax first sets the host allocator for XLA:CPU (`host_memory`:
freed per-step buffers stay mapped for reuse when JAX computes on the CPU;
VIT_JAX_REUSE_HOST_MEMORY=0 keeps glibc's defaults). It has to run before JAX starts
its CPU client, which is why it is here and not in the modules that use JAX.
"""

from vit_jax import host_memory as _host_memory

_host_memory.configure()

__version__ = "0.1.0"
