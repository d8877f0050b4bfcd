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

Bundled datasets (`digits`, `moving_digits`) are TFDS builders registered on
import and prepared on first use into data_dir.
"""

from vit_jax.data import builders
from vit_jax.data.config import default_config, validate
from vit_jax.data.folder import decode_file, skipped_files
from vit_jax.data.mixing import mix
from vit_jax.data.pipeline import (
  BadDataError,
  DatasetInfo,
  eval_iterator,
  get_info,
  num_eval_batches,
  preprocess_for_eval,
  train_iterator,
)
from vit_jax.data.sources import DatasetNotPreparedError

__all__ = [
  "BadDataError",
  "DatasetInfo",
  "DatasetNotPreparedError",
  "builders",
  "decode_file",
  "default_config",
  "eval_iterator",
  "get_info",
  "mix",
  "num_eval_batches",
  "preprocess_for_eval",
  "skipped_files",
  "train_iterator",
  "validate",
]
