"""Writes test media files (videos through PyAV) for the folder, prediction and figure tests."""

import numpy as np


def write_video(path: str, frames: np.ndarray, codec: str = "libx264", fps: int = 10) -> None:
  """Encodes uint8 [T, H, W, 3] frames with PyAV."""
  import av  # noqa: PLC0415 (only the tests that write videos need it)

  with av.open(path, "w") as container:
    stream = container.add_stream(codec, rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = "yuv420p"
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
