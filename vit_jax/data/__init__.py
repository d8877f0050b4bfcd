"""Input pipelines: TFDS images and videos, bundled offline datasets, folders, exact eval.

    from vit_jax import data
    config.data = data.default_config()          # every key, documented there
    info = data.get_info(config.data)            # classes, sizes, input shape
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    sharding = NamedSharding(mesh, P("data"))
    for batch in data.train_iterator(config.data, global_batch_size=512, sharding=sharding,
                                     seed=0, start_step=step): ...   # {"image", "label"}
    for batch in data.eval_iterator(config.data, global_batch_size=512, sharding=sharding):
      ...  # {"image", "label", "mask"}: sum metrics over mask
    images, labels = data.mix(rng, batch["image"], onehot, mixup_alpha=0.2)  # in the step

Bundled datasets (`digits`, `moving_digits`) are TFDS builders, registered when the
pipeline is first used and prepared on first use into data_dir.

The names below are resolved on first use (PEP 562), so importing this package costs
nothing: `vit_jax.data.mixing` (used inside the jitted train step) and
`vit_jax.data.config` need neither TensorFlow nor TFDS, which a GPU box that only
benchmarks or serves a model often lacks. The pipeline imports them when it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the submodule that defines it.
_EXPORTS = {
    "default_config": "config", "validate": "config",
    "decode_file": "folder", "skipped_files": "folder",
    "mix": "mixing",
    "BadDataError": "pipeline", "DatasetInfo": "pipeline", "eval_iterator": "pipeline",
    "get_info": "pipeline", "num_eval_batches": "pipeline",
    "preprocess_for_eval": "pipeline", "train_iterator": "pipeline",
    "DatasetNotPreparedError": "sources",
}
_SUBMODULES = ("augment", "augment_spec", "builders", "config", "distribute", "folder",
               "image_ops", "mixing", "pipeline", "preprocess", "randaugment",
               "randaugment_policy", "sources", "video_ops")
# Video data as users store it, and the video recipes' augmentation.
_SUBMODULES += ("dmvr", "dmvr_writer", "manifest", "video_augment")
# Native resolution (NaViT / NaFlex): budget resize and packing.
_SUBMODULES += ("native",)

__all__ = sorted(_EXPORTS) + ["builders"]


def __getattr__(name: str) -> Any:
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
  if name in _SUBMODULES:
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted(set(__all__) | set(_SUBMODULES))
