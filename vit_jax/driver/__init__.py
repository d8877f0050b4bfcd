"""The training driver behind `python -m vit_jax.main`.

  config       the config schema (`base_config`) and its validation
  train        set-up, the loop, evaluation (`train_and_evaluate`, `evaluate`)
  steps        the jitted train and eval steps, `TrainState`
  optim        optimizer, learning-rate schedules, layer decay, freezing
  checkpointer Orbax checkpoints of a run (WORKDIR/checkpoints/<step>/state)
  workdir      config.json, and whether a restart may resume the checkpoints
  progress     the progress bar, or plain lines in a log
  parallel     the device mesh, sharding rules, jax.distributed
  writer       metrics.jsonl and TensorBoard
  main         the command line

Nothing here is imported eagerly, so `vit_jax.driver.steps` (used by benchmarks and
notebooks) does not pull in the TensorFlow input pipeline that `train` needs.
"""
