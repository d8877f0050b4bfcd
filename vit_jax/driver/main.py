"""Command line: train, fine-tune and evaluate.

  python -m vit_jax.main --config configs/vit_digits.py --workdir workdirs/digits
  python -m vit_jax.main --config configs/vit_digits.py --workdir DIR --config.total_steps=100
  python -m vit_jax.main --config configs/vit_digits.py --workdir DIR --mode=eval
  python -m vit_jax.main --config configs/vit_digits.py --workdir DIR --mode=eval \
      --checkpoint FILE.npz

Fine-tuning is training with `--config.init_from.path=FILE` (any format that
vit_jax.checkpoint reads). Multi-host: pass --coordinator_address, --num_processes
and --process_id (or the VIT_JAX_* environment variables; see vit_jax/driver/cluster.py
and launch/).

Exit status (what launch scripts and schedulers act on):
  0   finished: training reached total_steps (results.json written), or eval done;
  1   refused or failed with a reported error (bad config, data, checkpoint, workdir,
      NaN loss, missing accelerator), or an unexpected exception (traceback);
  75  stopped early after SIGTERM, with a complete checkpoint of the step it reached:
      run the same command again to resume (EX_TEMPFAIL, "try again later"; the
      Slurm script requeues the job on it);
  130 stopped by Ctrl-C (SIGINT), the same way: checkpoint saved, run again to resume.
      A second Ctrl-C exits at once (the checkpoints already written stay).

A failed run exits at once after its cleanup (pending checkpoint saves are completed
first), never waiting on input-pipeline threads (errors.exit_now says why). In a
multi-process job the failing process tells the others, which exit with status 1 within
about a second (vit_jax/driver/cluster.py); a process that died without a word is noticed
at jax.distributed's heartbeat timeout (VIT_JAX_HEARTBEAT_TIMEOUT, 100 s).
"""

from __future__ import annotations

import os
import sys
import traceback

# TensorFlow only feeds data; keep it off accelerators and quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import logging as logging_std  # noqa: E402

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vit_jax import compilation_cache, errors, host_memory  # noqa: E402
from vit_jax.data import config as data_config  # noqa: E402
from vit_jax.driver import cluster, train  # noqa: E402
from vit_jax.driver import config as config_lib  # noqa: E402
from vit_jax.driver import workdir as workdir_lib  # noqa: E402
from vit_jax.tools import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py[:ARGS]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
_MODE = flags.DEFINE_enum("mode", "train", list(config_lib.MODES), "train (also fine-tunes) or eval.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "", "--mode=eval: a checkpoint file to score "
                                  "instead of the workdir's latest checkpoint.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_CACHE = flags.DEFINE_string("compilation_cache", compilation_cache.DEFAULT_DIR,
                             compilation_cache.HELP)


_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Show the traceback of errors vit_jax reports on purpose (bad config, "
    "data, checkpoint or workdir; a NaN loss); also VIT_JAX_VERBOSE=1.")

PROGRAM = "vit_jax.main"
EXIT_PREEMPTED = 75
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's status for a job stopped by Ctrl-C


class _QuietOrbax(logging_std.Filter):
  """Drops Orbax's per-save INFO chatter; its warnings and errors still show."""

  def filter(self, record):
    return record.levelno >= logging_std.WARNING or "orbax" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    with errors.reported(PROGRAM, _VERBOSE.value):
      result = _main()
  except SystemExit as e:  # a reported error (errors.reported printed it and set the cause)
    _fail(e.code if isinstance(e.code, int) else 1,
          f"{type(e.__context__).__name__}: {e.__context__}" if e.__context__ else "see its log")
  except KeyboardInterrupt:  # Ctrl-C before the training loop, which handles it itself
    sys.stderr.write(f"{PROGRAM}: interrupted before training started; nothing was saved.\n")
    _fail(EXIT_INTERRUPTED, "interrupted")
  except BaseException as e:  # a bug: keep its traceback
    traceback.print_exc()
    _fail(1, f"{type(e).__name__}: {e}")
  if result.get("preempted"):
    sys.exit(EXIT_INTERRUPTED if result["preempted"] == "SIGINT" else EXIT_PREEMPTED)


def _fail(status: int, message: str) -> None:
  """Ends a failed run: the other processes are told, then this one exits at once.

  Cleanup has already happened (train.py closes the checkpointer in `finally`, so pending
  saves are complete). errors.exit_now says why the exit cannot go through the
  interpreter's shutdown.
  """
  cluster.announce_failure(message if status == 1 else f"stopped with status {status}")
  errors.exit_now(status)


def _main() -> dict:
  logging.get_absl_handler().addFilter(_QuietOrbax())
  # `import vit_jax` set the host allocator before JAX started (vit_jax/host_memory.py).
  logging.info("Host memory reuse (%s): %s", host_memory.ENV, host_memory.state)
  config = _load_config()
  # Fail on a bad config, workdir or data path before anything starts or compiles.
  config_lib.validate(config)
  workdir_lib.check_writable(_WORKDIR.value)
  data_config.check_paths(config.data)
  compilation_cache.use(_CACHE.value)
  cluster.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  cluster.check_platform()
  import tensorflow as tf  # noqa: PLC0415
  tf.config.set_visible_devices([], "GPU")
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)
  if _MODE.value == "eval":
    return train.evaluate(config, _WORKDIR.value, _CHECKPOINT.value)
  return train.train_and_evaluate(config, _WORKDIR.value)


def _load_config():
  """The --config file's config, a file that does not load reported in one message.

  ml_collections loads the file while parsing flags and, if that fails, returns a
  stand-in that raises its own OSError ("... config_config") at first use, with a
  40-60 line traceback.
  """
  config = _CONFIG.value
  try:
    config.keys()  # the stand-in of a file that failed to load raises here
  except errors.UserError:
    raise
  except Exception as e:  # noqa: BLE001 (any failure of the user's file is reported)
    raise errors.ConfigError(describe_config_file_error(
        flags.FLAGS["config"].config_filename, e)) from e
  return config


def describe_config_file_error(spec: str, error: BaseException) -> str:
  """What went wrong loading config file `spec` ("path.py[:ARG]"), and the fix."""
  path = spec.split(":")[0]
  if not os.path.isfile(path):
    folder = os.path.dirname(path) or "."
    near = (sorted(f for f in os.listdir(folder) if f.endswith(".py"))
            if os.path.isdir(folder) else [])
    hint = f" {folder} holds: {', '.join(near)}." if near else ""
    return f"config file {path} does not exist.{hint} Pass --config PATH/TO/CONFIG.py[:ARG]."
  try:
    with open(path) as f:
      compile(f.read(), path, "exec")
  except SyntaxError as e:
    text = (e.text or "").strip()
    return (f"config file {path} line {e.lineno}: {e.msg}" + (f"\n  {text}" if text else "")
            + "\nFix the file.")
  cause = str(error).strip().splitlines()
  return (f"config file {spec} does not load: {type(error).__name__}: "
          f"{cause[-1] if cause else ''}\nFix the file or its argument (after the ':').")


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a misspelled `--config.a.b=...` reported in one line.

  ml_collections raises a bare AttributeError/KeyError for an override of a key the
  config does not have; absl would print it as a traceback.
  """
  spec = _config_spec(argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # absl's own: a bad value, a missing flag
    if spec and str(e).startswith("flag --config="):  # the file raised while loading
      _config_file_error(argv, spec, e.__cause__ or e)
    sys.stderr.write(f"{PROGRAM}: {e}\nPass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(1)
  except SyntaxError as e:  # the config file's own syntax
    _config_file_error(argv, spec or e.filename or "?", e)
  except (AttributeError, KeyError) as e:
    if errors.verbose_requested("--verbose" in argv):
      raise
    sys.stderr.write(errors.format_error(PROGRAM, errors.ConfigError(
        config_lib.describe_override_error(argv, e))))
    sys.exit(1)


def _config_spec(argv: list[str]) -> str | None:
  """The value of --config in `argv` ("--config X" or "--config=X"), or None."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _config_file_error(argv: list[str], spec: str, error: BaseException) -> None:
  if errors.verbose_requested("--verbose" in argv):
    raise error
  sys.stderr.write(errors.format_error(PROGRAM, errors.ConfigError(
      describe_config_file_error(spec, error))))
  sys.exit(1)


def run() -> None:
  """`python -m vit_jax.main` (vit_jax/main.py) lands here."""
  flags.mark_flags_as_required(["config", "workdir"])
  cli.list_in_help(__name__)
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
