"""The per-key report of every checkpoint surgery: what happened to each parameter.

`adapt` (checkpoint -> model of the same family), `inflate_from_image` (image ViT ->
ViViT) and `adapt_video` return one `AdaptReport`: one `KeyAction` per parameter of
the model (and per checkpoint parameter left unused, as "ignored"), with the shapes on
both sides and a note on why.

    params, report = checkpoint.adapt(restored, init)
    print(report)                 # summary line, then one line per key
    report.keys("reinitialised")  # ["head/bias", "head/kernel"]
    report["embedding/kernel"].action
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, Optional


@dataclasses.dataclass(frozen=True)
class KeyAction:
  """What a surgery did with one parameter (per-layer key names)."""
  key: str
  action: str  # one of the report's actions
  source_shape: Optional[tuple[int, ...]]
  target_shape: Optional[tuple[int, ...]]
  note: str = ""
  expected: bool = True  # False: a mismatch `strict=True` would have refused

  def __str__(self) -> str:
    shapes = f"{self.source_shape} -> {self.target_shape}"
    if self.action == "copied" and self.source_shape == self.target_shape:
      shapes = f"{self.target_shape}"
    note = f"  ({self.note})" if self.note else ""
    warn = "  [unexpected]" if not self.expected else ""
    return f"{self.action:<13} {self.key}  {shapes}{note}{warn}"


@dataclasses.dataclass
class AdaptReport:
  """Every key of checkpoint and model, with what the surgery `title` did to it.

  Attributes:
    title: the surgery ("adapt", "ViViT initialisation from an image ViT").
    actions: the actions that surgery takes, in the order they are listed.
    entries: one KeyAction per key.
    notes: whole-tree remarks (e.g. "checkpoint encoder is scanned").
    logger_name: where `log()` writes (the surgery's module).
  """
  title: str
  actions: Sequence[str]
  entries: list[KeyAction] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)
  logger_name: str = __name__

  def add(self, *args: Any, **kwargs: Any) -> None:
    entry = KeyAction(*args, **kwargs)
    if entry.action not in self.actions:
      raise ValueError(f"Unknown action {entry.action!r}; choose one of {self.actions}.")
    self.entries.append(entry)

  def keys(self, action: str) -> list[str]:
    if action not in self.actions:
      raise ValueError(f"Unknown action {action!r}; choose one of {tuple(self.actions)}.")
    return [e.key for e in self.entries if e.action == action]

  def __getitem__(self, key: str) -> KeyAction:
    """The entry of model parameter `key` (or of checkpoint key `key` if only ignored)."""
    found = [e for e in self.entries if e.key == key]
    if not found:
      raise KeyError(f"{key!r} is not in the report.")
    return next((e for e in found if e.action != "ignored"), found[0])

  def __contains__(self, key: str) -> bool:
    return any(e.key == key for e in self.entries)

  @property
  def copied(self) -> list[str]:
    return self.keys("copied")

  @property
  def reinitialised(self) -> list[str]:
    return self.keys("reinitialised")

  @property
  def ignored(self) -> list[str]:
    return self.keys("ignored")

  @property
  def reshaped(self) -> list[str]:
    return self.keys("reshaped") if "reshaped" in self.actions else []

  @property
  def unexpected(self) -> list[KeyAction]:
    return [e for e in self.entries if not e.expected]

  def summary(self) -> str:
    counts = ", ".join(f"{len(self.keys(a))} {a}" for a in self.actions)
    return f"{self.title}: {counts} ({len(self.unexpected)} unexpected)"

  def __str__(self) -> str:
    lines = [self.summary()] + [f"  note: {n}" for n in self.notes]
    for action in self.actions:
      lines += [f"  {e}" for e in self.entries if e.action == action]
    return "\n".join(lines)

  def log(self, log: Optional[logging.Logger] = None) -> None:
    """Summary and every non-copied key at INFO; unexpected keys at WARNING."""
    log = log or logging.getLogger(self.logger_name)
    log.info(self.summary())
    for note in self.notes:
      log.info("%s: %s", self.title, note)
    for entry in self.entries:
      if not entry.expected:
        log.warning("%s: %s", self.title, entry)
      elif entry.action != "copied":
        log.info("%s: %s", self.title, entry)
