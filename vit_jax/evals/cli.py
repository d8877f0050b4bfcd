"""`python -m vit_jax.evaluate`: any source, any set of evaluators, no training.

  python -m vit_jax.evaluate --config configs/evals/digits.py --source workdirs/vit_digits \\
      --workdir workdirs/evals_digits
  python -m vit_jax.evaluate --config configs/evals/dinov2_s14_imagenet.py \\
      --workdir workdirs/dinov2_s14       # source: the config's (hf-hub:facebook/dinov2-small)

--source: a workdir of this project (image or video), a checkpoint file or folder, an
`hf-hub:` id, or `random:MODEL_NAME`. WORKDIR receives `eval_results.json` (every
evaluator's figures as `<evaluator>/<metric>`, plus what is not a number under
`details`) and `feature_cache/` (features reused by the next evaluation of the same
source, data and preprocessing). The table of results is printed at the end. A config,
source or data problem stops the command before anything is written to WORKDIR.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vit_jax import compilation_cache, errors, paths  # noqa: E402
from vit_jax.driver import cluster, parallel  # noqa: E402
from vit_jax.driver.writer import write_json_atomic  # noqa: E402
from vit_jax.errors import ConfigError  # noqa: E402

PROGRAM = "vit_jax.evaluate"
RESULTS_FILE = "eval_results.json"



def _define_flags() -> None:
  """Defined when the command runs, so that importing this module defines no flags."""
  config_flags.DEFINE_config_file(
      "config", None, "Evaluation config (configs/evals/*.py[:ARGS]).", lock_config=True)
  flags.DEFINE_string("source", None, "What to evaluate (default: config.source).")
  flags.DEFINE_string("workdir", None, "Results and the feature cache.")
  flags.DEFINE_bool("verbose", False, "Show the traceback of reported errors.")
  flags.DEFINE_string("compilation_cache", compilation_cache.DEFAULT_DIR,
                      compilation_cache.HELP)


def evaluate(config, source: str, workdir: str) -> dict:
  """Runs every evaluator of `config` on `source`; writes WORKDIR/eval_results.json."""
  from vit_jax import data  # noqa: PLC0415 (TensorFlow)
  from vit_jax.evals import backbone as backbone_lib  # noqa: PLC0415
  from vit_jax.evals import features, registry, runner  # noqa: PLC0415

  options = registry.validate_standalone(config)
  source = source or config.source
  if not source:
    raise ConfigError("Nothing to evaluate: pass --source (a workdir, a checkpoint, "
                      "hf-hub:ORG/NAME or random:MODEL_NAME) or set config.source.")
  info = data.get_info(config.data)
  backbone = backbone_lib.load_backbone(source, input_shape=info.input_shape, seed=config.seed)
  mesh = parallel.create_mesh(1)
  evaluators = runner.Evaluators(
      config.evals, config.data, mesh=mesh, eval_batch_size=config.batch_size,
      default_every=None, training=False, cache_dir=paths.join(workdir, features.CACHE_DIR),
      preprocessing=backbone.data_overrides)
  for o in options.values():  # before anything is extracted or written
    if o["type"] != "classification":
      features.check_supported(backbone.model, registry.features_of(o))
    data.get_info(evaluators.data_config(o))  # the evaluator's dataset exists
  params = jax.device_put(backbone.params, parallel.replicated(mesh))
  results = evaluators.run(backbone.model, params)
  payload = {**results, "source": source, "details": evaluators.details}
  paths.makedirs(workdir)
  write_json_atomic(paths.join(workdir, RESULTS_FILE), payload)
  if jax.process_index() == 0:
    print(runner.format_table(results))
    if evaluators.details:
      print(json.dumps(evaluators.details, indent=1, default=str))
  return payload


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  with errors.reported(PROGRAM, f.verbose):
    from vit_jax.evals import registry  # noqa: PLC0415

    registry.validate_standalone(f.config)  # before anything starts or compiles
    compilation_cache.use(f.compilation_cache)
    cluster.initialize()
    import tensorflow as tf  # noqa: PLC0415

    tf.config.set_visible_devices([], "GPU")
    if jax.process_index() != 0:
      logging.set_verbosity(logging.WARNING)
    evaluate(f.config, f.source, f.workdir)


def run() -> None:
  _define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  try:
    app.run(main)
  except (AttributeError, KeyError) as e:  # a misspelled --config.a.b override
    sys.stderr.write(errors.format_error(PROGRAM, ConfigError(f"Invalid config override: {e}")))
    sys.exit(1)
