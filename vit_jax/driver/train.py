"""Training, fine-tuning and evaluation driver.

`train_and_evaluate(config, workdir)` reads top to bottom in stages: config,
mesh, data, model, optimizer, state (resume / pretrained / random), compile,
loop (log, evaluate, checkpoint), final evaluation. `evaluate(config, workdir)`
scores the latest checkpoint of a workdir, or a pretrained file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import signal
import sys
import time
import zipfile
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import safetensors
from absl import logging
from jax.experimental import multihost_utils

from vit_jax import checkpoint, data, errors, models, paths
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.checkpoint.orbax_io import CHECKPOINTS_DIR
from vit_jax.driver import checkpointer, cluster, optim, parallel, steps
from vit_jax.driver import config as config_lib
from vit_jax.driver import workdir as workdir_lib
from vit_jax.driver.progress import Progress
from vit_jax.driver.writer import MetricWriter, write_json_atomic
from vit_jax.errors import ConfigError, UserError, WorkdirError
from vit_jax.evals import classification, features
from vit_jax.evals import runner as evals_runner
from vit_jax.models import packed, vivit
from vit_jax.models.positions import posemb_prefix_rows


class NonFiniteLossError(UserError, FloatingPointError):
  """The loss or the parameters became NaN/Inf; no checkpoint of that state was written."""


class _Preemption:
  """Turns SIGTERM and a first Ctrl-C (SIGINT) into a flag the loop checks after every step.

  Either one saves a checkpoint of the step reached and stops the run (exit status 75
  for SIGTERM, "resume me"; 130 for Ctrl-C). A second Ctrl-C ends the process at once:
  the checkpoints already complete stay (Orbax writes each step atomically).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested: str | None = None  # "SIGTERM" or "SIGINT" once one arrived
    self._previous = {}

  def __enter__(self):
    for signum in self.SIGNALS:
      try:
        self._previous[signum] = signal.signal(signum, self._handle)
      except ValueError:  # not the main thread (e.g. some test runners): no handler
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if self.requested == "SIGINT" and signum == signal.SIGINT:
      sys.stderr.write("Second Ctrl-C: exiting without saving the current step.\n")
      errors.exit_now(130)
    logging.warning("%s received: saving a checkpoint and stopping%s.", name,
                    " (Ctrl-C again exits at once)" if signum == signal.SIGINT else "")
    self.requested = self.requested or name

  def should_stop(self, at_sync_point: bool) -> bool:
    """Whether this step is the one after which the run saves and stops.

    One process: as soon as a signal has arrived. Several: signals reach them at
    different steps, and one that stopped alone would leave the others waiting
    forever in the next step's collectives; so they compare flags at logging steps
    (`at_sync_point`, the same steps on every process) and stop together.
    """
    if jax.process_count() == 1:
      return self.requested is not None
    if not at_sync_point:
      return False
    flag = np.asarray(self.requested is not None)
    stop = bool(multihost_utils.process_allgather(flag).any())
    if stop and self.requested is None:
      self.requested = "SIGTERM"  # another process's preemption: resume later (75)
    return stop

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)


# `model.remat="auto"` turns rematerialisation on when the train step without it would use
# more than this fraction of a device's memory (the rest: the input pipeline's prefetched
# batches, the evaluation step, allocator slack).
REMAT_AUTO_MEMORY_FRACTION = 0.9


def build_model(config: ml_collections.ConfigDict, num_classes: int, pretrained=None):
  # remat="auto" starts without remat; compile_train_step switches it on if needed.
  return config_lib.build_model(config, num_classes, pretrained)


def device_memory_limit() -> int | None:
  """Bytes one local device can allocate (GPUs, TPUs); None where unknown (CPUs)."""
  stats = jax.local_devices()[0].memory_stats()
  return stats.get("bytes_limit") if stats else None


def step_memory_bytes(compiled) -> int:
  """Peak device bytes of a compiled step: arguments + outputs + temporaries - donated."""
  m = compiled.memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes)


def compile_train_step(setup: Setup, state: steps.TrainState, batch: Any,
                       memory_limit: int | None) -> Any:
  """The compiled train step; with `model.remat="auto"` also decides remat.

  Without remat the backward pass keeps every layer's activations; with it each block
  keeps only its input and recomputes the rest (~1/3 more FLOPs). "auto" compiles the
  step without remat first and, if that needs more than REMAT_AUTO_MEMORY_FRACTION of
  `memory_limit` (a device's bytes; None: unknown, keep it), rebuilds `setup.model`
  with remat and compiles again. Remat changes no parameter, so the state still fits.
  It saves memory together with `model.scan_layers=True`; on XLA:CPU unscanned remat
  saved nothing (the log line reports both sizes, so a useless switch shows).
  """
  def compile_with(model):
    return jax.jit(
        steps.make_train_step(model, setup.tx, setup.config, setup.info.num_classes),
        in_shardings=(setup.state_shardings, setup.batch_sharding),
        out_shardings=(setup.state_shardings, parallel.replicated(setup.mesh)),
        donate_argnums=(0,)).lower(state, batch).compile()

  compiled = compile_with(setup.model)
  if config_lib.remat_setting(setup.config.model.get("remat", False)) != "auto" or (
      not memory_limit):
    return compiled
  plain = step_memory_bytes(compiled)
  budget = REMAT_AUTO_MEMORY_FRACTION * memory_limit
  if plain <= budget:
    logging.info("remat=auto: the train step needs %.2f GiB of %.2f GiB; no remat.",
                 plain / 2**30, memory_limit / 2**30)
    return compiled
  setup.model = setup.model.clone(remat=True)
  compiled = compile_with(setup.model)
  remat = step_memory_bytes(compiled)
  logging.info("remat=auto: the train step needs %.2f GiB of %.2f GiB without remat, "
               "%.2f GiB with remat (policy %s); using remat.", plain / 2**30,
               memory_limit / 2**30, remat / 2**30, setup.model.options.remat_policy)
  if remat > budget:
    logging.warning("remat=auto: even with remat the train step needs %.2f GiB of %.2f GiB; "
                    "lower batch_size or use mesh.fsdp.", remat / 2**30, memory_limit / 2**30)
  return compiled


def _place(tree: Any, shardings: Any) -> Any:
  """Host arrays -> global arrays with `shardings` (each process holds the full value)."""
  def put(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree, shardings)


def _state_shardings(mesh, abstract_state: steps.TrainState) -> steps.TrainState:
  rep = parallel.replicated(mesh)
  shard = lambda tree: None if tree is None else parallel.tree_shardings(mesh, tree)
  return steps.TrainState(step=rep, params=shard(abstract_state.params),
                          opt_state=shard(abstract_state.opt_state), rng=rep,
                          ema_params=shard(abstract_state.ema_params))


def read_checkpoint(reader, path: str, **kwargs):
  """`reader(path, **kwargs)` (a vit_jax.checkpoint reader), with a damaged file reported.

  The readers raise CheckpointError for what they recognise; a file damaged in a way
  they do not (a truncated .safetensors header through `load_pretrained`, a cut-off zip)
  raises the library's own error, which becomes a CheckpointError naming the file, as
  `convert` and `--checkpoint` report it.
  """
  try:
    return reader(path, **kwargs)
  except errors.UserError:
    raise
  except (safetensors.SafetensorError, OSError, EOFError, zipfile.BadZipFile,
          json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{path}: cannot read it ({type(e).__name__}: {e}). The file is "
                          "unreadable, truncated or corrupt: copy or download it again.") from e


class Setup:
  """Everything the loop and the evaluator share, built once per run."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    config_lib.validate(config)
    # model_name="from_checkpoint": the file gives the architecture (and, with
    # init_from.preprocessing, the input normalisation); it is read once, here.
    self.pretrained = None
    if config.model_name == config_lib.FROM_CHECKPOINT:
      self.pretrained = read_checkpoint(checkpoint.load_pretrained, config.init_from.path)
      logging.info("Model from %s (%s): %s; its preprocessing: %s", config.init_from.path,
                   self.pretrained.format, self.pretrained.model.__class__.__name__,
                   self.pretrained.preprocessing)
      if config.init_from.preprocessing:
        config = config_lib.with_pretrained_preprocessing(config, self.pretrained.preprocessing)
    self.config = config
    self.workdir = workdir
    self.mesh = parallel.create_mesh(config.mesh.fsdp)
    n = jax.device_count()
    for name, size in (("batch_size", config.batch_size),
                       ("eval_batch_size", self.eval_batch_size)):
      if size % n:
        raise ConfigError(f"{name}={size} is not divisible by the {n} devices; use a "
                         f"multiple of {n} (the batch size is global, over all hosts).")
    self.batch_sharding = parallel.batch_sharding(self.mesh)
    self.info = data.get_info(config.data)
    self.model = build_model(config, self.info.num_classes, self.pretrained)
    self.dummy = jnp.zeros((1,) + tuple(self.info.input_shape), jnp.float32)
    self.abstract_params = jax.eval_shape(
        lambda: self.model.init(jax.random.key(0), self.dummy)["params"])
    if config.data.resolution_mode == "native":
      self._check_native()
    self.tx = optim.create_optimizer(config, self.abstract_params)
    rng = jax.random.key(config.seed)
    self.init_rng, train_rng = jax.random.split(rng)
    self.train_rng_data = jax.random.key_data(train_rng)
    self.abstract_state = jax.eval_shape(self._state_from_params, self.abstract_params)
    self.state_shardings = _state_shardings(self.mesh, self.abstract_state)
    self.param_shardings = self.state_shardings.params
    self.eval_params_shardings = self.state_shardings.eval_params

  def _check_native(self) -> None:
    """Native resolution: data.patch_size from the model, and the model takes packed
    batches (its own error, as a config error, when it does not)."""
    c = self.config
    patch = tuple(self.model.patch_hw)
    if c.data.patch_size is not None and data.config.patch_size(c.data) != patch:
      raise ConfigError(f"data.patch_size={c.data.patch_size!r} is not the model's patch "
                        f"{patch}: leave it unset (the driver takes the model's).")
    c.data.patch_size = patch
    self.info = dataclasses.replace(
        self.info, preprocessing={**self.info.preprocessing, "patch_size": patch})
    k = data.native.images_per_row(c.data, train=True)
    rows = data.native.num_rows(c.data, c.batch_size, train=True)
    if rows % c.accum_steps:
      raise ConfigError(f"accum_steps={c.accum_steps} must divide the {rows} packed rows of a "
                        f"batch of {c.batch_size} images ({k} per row): pick a batch_size "
                        f"that is a multiple of {k * c.accum_steps}.")
    ph, pw = patch
    probe = packed.pack_images([np.zeros((ph, pw, 3), np.float32)], patch, c.data.seq_len, k)[0]
    try:
      jax.eval_shape(lambda p: self.model.apply({"params": p}, probe), self.abstract_params)
    except ValueError as e:
      raise ConfigError(f"data.resolution_mode='native' packs images; {c.model_name} cannot "
                        f"take packed batches: {e}") from None

  @property
  def eval_batch_size(self) -> int:
    c = self.config
    return c.batch_size if c.eval_batch_size == -1 else c.eval_batch_size

  @property
  def restore_target(self) -> steps.TrainState:
    """The abstract state with its shardings: what a checkpoint restores into."""
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        self.abstract_state, self.state_shardings)

  def _state_from_params(self, params: Any) -> steps.TrainState:
    return steps.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params),
        rng=jnp.asarray(self.train_rng_data),
        ema_params=params if self.config.ema_decay else None)

  def init_params(self) -> Any:
    """Random parameters created directly in their shardings (no host copy)."""
    init = lambda rng: self.model.init(rng, self.dummy)["params"]
    return jax.jit(init, out_shardings=self.param_shardings)(self.init_rng)

  def state_from_params(self, params: Any) -> steps.TrainState:
    return jax.jit(self._state_from_params, out_shardings=self.state_shardings)(params)

  def host_init_params(self) -> Any:
    """Fresh parameters as host arrays on every process.

    Keys a checkpoint does not provide (a new head, ViViT's temporal encoder) keep
    these values, so each process needs the whole tree, also when the parameters are
    sharded over several hosts (gathered then; a model to fine-tune fits in host RAM).
    """
    init = self.init_params()
    if all(x.is_fully_addressable for x in jax.tree.leaves(init)):
      return jax.device_get(init)
    return multihost_utils.process_allgather(init)

  def pretrained_params(self, path: str, reset_head: bool | None = None) -> Any:
    """Loads any format vit_jax.checkpoint reads and fits it to this model.

    reset_head: start from a zero head even when the class counts match; None:
    `init_from.reset_head` (fine-tuning). Evaluating a checkpoint passes False.
    """
    if reset_head is None:
      reset_head = self.config.init_from.reset_head
    if isinstance(self.model, models.VideoTransformer):
      return self._video_pretrained_params(path, reset_head)
    init = self.host_init_params()
    same_file = self.pretrained is not None and path == self.config.init_from.path
    restored = self.pretrained.params if same_file else read_checkpoint(checkpoint.load, path)
    c = self.config.init_from
    # The rows before the patch grid: known from both models when the file gave the
    # architecture; else adapt reads them from the tokens each tree holds.
    prefix = ((posemb_prefix_rows(self.pretrained.model),
               posemb_prefix_rows(self.model)) if same_file else None)
    params, report = checkpoint.adapt(
        restored, init, resize_posemb=c.resize_posemb, posemb_method=c.posemb_method,
        strict=c.strict, reinit=("head/",) if reset_head else (), log=False,
        posemb_prefix=prefix)
    logging.info("Initialised from %s:\n%s", path, report)
    return _place(params, self.param_shardings)

  # ---- ViViT: an image ViT is inflated, a video checkpoint (ours, Scenic's) copied.
  def _video_pretrained_params(self, path: str, reset_head: bool) -> Any:
    c = self.config.init_from
    if c.posemb_method != "bilinear":
      raise ConfigError(f"init_from.posemb_method={c.posemb_method!r}: ViViT's inflation "
                       "resizes position embeddings bilinearly only; use 'bilinear'.")
    init = self.host_init_params()
    restored, fmt = read_checkpoint(checkpoint.load_with_format, path, allow_video=True)
    params, report = checkpoint.adapt_video(
        restored, init, variant=self.model.variant,
        token_grid=vivit.token_grid(self.model, self.dummy.shape),
        kernel_init_method=c.kernel_init_method, temporal_init=c.temporal_init,
        time_attention_init=c.time_attention_init, reset_head=reset_head, strict=c.strict)
    resized = [e.key for e in report.entries if e.action in ("resized", "resized+tiled")]
    if resized and not c.resize_posemb:
      raise ConfigError(f"{resized} need a resize of the image position embeddings and "
                       "init_from.resize_posemb=False: allow it, or match the image grid.")
    logging.info("Initialised %s from %s (%s):\n%s", self.config.model_name, path, fmt, report)
    return _place(params, self.param_shardings)


def _evaluators(setup: Setup, training: bool) -> evals_runner.Evaluators:
  """The run's evaluators: the default classification of its own head at
  config.eval_every_steps, and config.evals (vit_jax/evals)."""
  return evals_runner.Evaluators(
      setup.config.evals, setup.config.data, mesh=setup.mesh,
      eval_batch_size=setup.eval_batch_size, default_every=setup.config.eval_every_steps,
      training=training,
      cache_dir=None if training else paths.join(setup.workdir, features.CACHE_DIR))


def _evaluate_or_save(evaluate: Callable[[], dict[str, float]], state: steps.TrainState,
                      ckpt: checkpointer.Checkpointer) -> dict[str, float]:
  """`evaluate()` during training; if it fails (bad evaluation data), the trained state
  is saved first, so that no trained step is lost to the error.

  One process only: with several, a save needs every process, and the others are waiting
  in the evaluation's collectives (they stop when this one announces its failure,
  cluster.watch_peers); the run then resumes from its last checkpoint.
  """
  try:
    return evaluate()
  except Exception:
    if jax.process_count() > 1:
      raise
    step = int(jax.device_get(state.step))
    logging.error("The evaluation at step %d failed; saving step %d before stopping.", step, step)
    ckpt.save(state, force=True)
    ckpt.wait()
    raise


def _jit_eval_step(setup: Setup):
  return classification.jit_step(setup.model, setup.info.num_classes, setup.mesh,
                                 setup.eval_params_shardings)


def _check_finite(step: int, metrics: dict[str, float], ckpt: checkpointer.Checkpointer,
                  last_checked: int, every: int) -> None:
  """Raises NonFiniteLossError if the loss or the parameters of logging step `step` are
  NaN/Inf; they are checked every `every` steps, last (finite) at `last_checked`."""
  bad = [k for k in ("loss", "param_norm") if not np.isfinite(metrics[k])]
  if bad:
    ckpt.wait()
    last = ckpt.latest_step()
    raise NonFiniteLossError(
        f"{' and '.join(bad)} became {metrics[bad[0]]}: detected at step {step} (checked every "
        f"{every} steps and at checkpoints; finite at step {last_checked}). Stopped without "
        f"saving this state; last good checkpoint: "
        f"{'none' if last is None else f'step {last}'} in {ckpt.directory}.\nLower "
        "lr.base, keep grad_clip_norm > 0, or check the input data; --config.log_every_steps=1 "
        "finds the first bad step.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (from scratch, a pretrained file, or resuming WORKDIR) and evaluates.

  A restart that cannot resume the workdir's checkpoints (another model, data or
  optimizer) is refused before anything in the workdir changes (workdir.check_resume).
  """
  # ---------------------------------------------------------------- set-up
  setup = Setup(config, workdir)
  saved = workdir_lib.read(workdir)
  signature = workdir_lib.state_signature(setup.abstract_state)
  resume_step = workdir_lib.latest_checkpoint_step(workdir)
  if resume_step is not None:
    changes = workdir_lib.check_resume(workdir, saved, config.to_dict(), setup.info.to_dict(),
                                       signature)
    if changes:
      logging.warning("Resuming step %d of %s with changed settings:\n  %s", resume_step,
                      workdir, "\n  ".join(changes))
    if resume_step >= config.total_steps:
      logging.warning("%s already finished (step %d of total_steps=%d): evaluating its last "
                      "checkpoint; raise --config.total_steps to train on.", workdir,
                      resume_step, config.total_steps)
  # A new run's initial state is built before anything is written, so a refused one (a
  # missing or damaged init_from.path) leaves no trace in its workdir.
  state = None
  if resume_step is None:
    state = (setup.state_from_params(setup.pretrained_params(config.init_from.path))
             if config.init_from.path else setup.state_from_params(setup.init_params()))
  paths.makedirs(workdir)
  ckpt = checkpointer.Checkpointer(
      workdir, keep=config.checkpoint.keep, keep_best=config.checkpoint.keep_best,
      best_metric=config.checkpoint.best_metric, async_save=config.checkpoint.async_save)
  try:
    return _train(setup, ckpt, state, resume_step, saved, signature)
  finally:
    ckpt.close()  # also on errors: pending saves complete, no async thread is left behind


def _train(setup: Setup, ckpt: checkpointer.Checkpointer, state: steps.TrainState | None,
           resume_step: int | None, saved: Any, signature: dict[str, Any]) -> dict[str, Any]:
  config, workdir = setup.config, setup.workdir
  process0 = jax.process_index() == 0

  # ---------------------------------------------------------------- state
  # Resuming this run wins over initialising from a pretrained file: a restarted
  # fine-tuning job continues its own steps instead of starting over. A damaged latest
  # checkpoint falls back to the newest intact one (checkpointer.restore_intact).
  if state is None:
    state = ckpt.restore_intact(setup.restore_target, resume_step)
  start_step = int(jax.device_get(state.step))
  # The run is valid (config, data, state): only now is its config recorded.
  workdir_lib.write(workdir, saved, config.to_dict(), setup.info.to_dict(), signature,
                    start_step)
  num_params = sum(x.size for x in jax.tree.leaves(setup.abstract_params))
  logging.info("%s: %s parameters; %d devices on %d processes; mesh %s; starting at step %d.",
               config.model_name, f"{num_params:,}", jax.device_count(), jax.process_count(),
               dict(setup.mesh.shape), start_step)

  # ---------------------------------------------------------------- compile
  eval_step = _jit_eval_step(setup)
  evaluators = _evaluators(setup, training=True)
  train_iter = data.train_iterator(config.data, global_batch_size=config.batch_size,
                                   sharding=setup.batch_sharding, seed=config.seed,
                                   start_step=start_step)
  writer = MetricWriter(workdir)
  if start_step < config.total_steps:
    first = next(train_iter)
    t = time.perf_counter()
    train_step = compile_train_step(setup, state, first, device_memory_limit())
    compile_seconds = time.perf_counter() - t
    logging.info("Train step compiled in %.1fs.", compile_seconds)
    batches = _chain_first(first, train_iter)
  else:
    batches = iter(())
    compile_seconds = 0.0

  # ---------------------------------------------------------------- loop
  schedule = optim.learning_rate_schedule(config)
  progress = Progress(config.total_steps, start_step, enabled=process0,
                      bar=config.progress_bar)
  eval_metrics: dict[str, float] = {}
  logged_throughput = False
  t_last, step_last = time.perf_counter(), start_step
  with _Preemption() as preemption:
    for step in range(start_step, config.total_steps):
      state, metrics = train_step(state, next(batches))
      done = step + 1
      last = done == config.total_steps
      is_eval = evaluators.due(done, last)
      is_ckpt = last or done % config.checkpoint.every_steps == 0
      is_log = last or done % config.log_every_steps == 0 or is_eval or is_ckpt
      stop = preemption.should_stop(at_sync_point=is_log)
      is_ckpt, is_log = is_ckpt or stop, is_log or stop
      progress.update(1)
      if not is_log:
        continue
      # The only host-device sync of the loop: at logging steps.
      host = jax.device_get(metrics)
      _check_finite(done, host, ckpt, step_last, config.log_every_steps)
      now = time.perf_counter()
      images_per_sec = (done - step_last) * config.batch_size / max(now - t_last, 1e-9)
      t_last, step_last = now, done
      record = {**host, "lr": float(schedule(step)), "images_per_sec": images_per_sec}
      if not logged_throughput:
        logging.info("Compile %.1fs; throughput %.1f images/s.", compile_seconds, images_per_sec)
        record["compile_seconds"] = compile_seconds
        logged_throughput = True
      writer.write(done, record)
      progress.log(float(host["loss"]), images_per_sec)
      if is_eval:
        eval_metrics = _evaluate_or_save(
            functools.partial(evaluators.run, setup.model, state.eval_params, step=done,
                              last=last, default_step=eval_step), state, ckpt)
        writer.write(done, {f"eval_{k}": v for k, v in eval_metrics.items()})
        logging.info("Step %d: eval %s", done, eval_metrics)
      if is_ckpt or is_eval:
        ckpt.save(state, metrics=eval_metrics if is_eval else None, force=stop)
      if stop:
        ckpt.wait()
        # No process exits before every process has finished its save: a scheduler
        # that ends the whole step when the first process exits (srun
        # --kill-on-bad-exit) must not cut another's checkpoint short. With a timeout:
        # a process that died meanwhile must not keep the others waiting forever.
        cluster.barrier(f"preempted checkpoint of step {done} complete")
        progress.close()
        writer.close()
        logging.warning("Preempted at step %d (%s); the checkpoint is complete. Restart with "
                        "the same --workdir to resume.", done, preemption.requested)
        return {"preempted": preemption.requested, "step": done}
      t_last = time.perf_counter()  # evaluation and checkpoint time is not throughput
  progress.close()

  # ---------------------------------------------------------------- final evaluation
  final_step = int(jax.device_get(state.step))
  if not eval_metrics:  # e.g. resumed after the last step: evaluate what is there
    eval_metrics = evaluators.run(setup.model, state.eval_params, default_step=eval_step)
  results = {**eval_metrics, "step": final_step}
  write_json_atomic(paths.join(workdir, "results.json"), results)
  writer.close()
  logging.info("Final results: %s\n%s", results, evals_runner.format_table(eval_metrics))
  return results


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             checkpoint_path: str = "") -> dict[str, Any]:
  """Evaluates the latest checkpoint of `workdir`, or `checkpoint_path` if given."""
  setup = Setup(config, workdir)
  if checkpoint_path:
    # The file's own head is what is evaluated, whatever init_from.reset_head says.
    params = setup.pretrained_params(checkpoint_path, reset_head=False)
    step = checkpointer.step_of(checkpoint_path)  # None: a file without a step (.npz, ...)
    logging.info("Evaluating %s%s.", checkpoint_path,
                 "" if step is None else f" (a run's checkpoint of step {step})")
  else:
    latest = workdir_lib.latest_checkpoint_step(workdir)  # checked without creating it
    if latest is None:
      raise WorkdirError(
          f"No checkpoint in {paths.join(paths.absolute(workdir), CHECKPOINTS_DIR)}: train "
          "first, or pass --checkpoint FILE to evaluate a pretrained file.")
    ckpt = checkpointer.Checkpointer(workdir)
    try:
      state = ckpt.restore_intact(setup.restore_target, latest)
    finally:
      ckpt.close()
    params = state.eval_params
    step = int(jax.device_get(state.step))
    logging.info("Evaluating step %d of %s.", step, workdir)
  results = {**_evaluators(setup, training=False).run(
      setup.model, params, default_step=_jit_eval_step(setup)), "step": step}
  paths.makedirs(workdir)
  write_json_atomic(paths.join(workdir, "eval_results.json"), results)
  logging.info("Evaluation: %s", results)
  return results


def _chain_first(first, rest):
  yield first
  yield from rest


