"""Decoding one video file: metadata, frame windows for the 2D/3D extractors, and the audio track.

This module is the entry point; the work is done by the modules below it:

- :func:`probe` (:mod:`.decode_probe`): metadata from PyAV (streams, codecs, rotation, the video stream's
  duration and frame rate).
- :func:`iter_frame_windows`: frames from one decode pass with one of two backends (``DecodeConfig.backend``):

  - ``"decord"`` (default, :mod:`.decode_worker`): decord decodes at the 2D size and frames are picked by
    timestamp; the 3D frames are made from the 2D frames. By default the decord work runs in a child process
    (:mod:`.decode_child`), so a decoder that hangs can be killed; ``in_process=True`` skips that.
  - ``"ffmpeg"`` (:mod:`.decode_ffmpeg`): one ffmpeg process with a ``split`` filter graph, the reference's
    ``fps`` / ``scale`` / ``crop`` filters on each branch. ffmpeg is itself a child process that is killed on
    timeout, so ``in_process`` does not apply.

  Both backends give upright frames for videos with a rotation display matrix (phone videos), as ffmpeg's
  autorotation does in the reference: sizes are computed from :attr:`VideoInfo.display_size`.
- :func:`read_audio` (:mod:`.decode_audio`): the audio track, decoded by ffmpeg to 16 kHz mono float32;
  :func:`read_log_mel`: its log-mel spectrogram in memory bounded by the result (the track is never held whole).

Every failure caused by the input file is a :class:`DecodeError` with one of :data:`REASONS`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from mcn.extract import decode_ffmpeg, decode_worker
from mcn.extract.decode_audio import read_audio, read_log_mel
from mcn.extract.decode_child import iter_windows_in_child
from mcn.extract.decode_probe import probe
from mcn.extract.decode_types import (
    BACKENDS,
    REASONS,
    DecodeConfig,
    DecodeError,
    DecoderUsage,
    FrameWindow,
    VideoInfo,
    check_file,
    ffmpeg_binary,
    output_size_2d,
)

__all__ = [
    "BACKENDS",
    "REASONS",
    "DecodeConfig",
    "DecodeError",
    "DecoderUsage",
    "FrameWindow",
    "VideoInfo",
    "check_file",
    "ffmpeg_binary",
    "iter_frame_windows",
    "iter_windows_in_child",
    "output_size_2d",
    "probe",
    "read_audio",
    "read_log_mel",
]


def iter_frame_windows(
    path: str | os.PathLike,
    info: VideoInfo,
    config: DecodeConfig,
    in_process: bool = False,
    usage: DecoderUsage | None = None,
) -> Iterator[FrameWindow]:
    """Decode the video once and yield :class:`FrameWindow` s of ``config.window_seconds`` each, in order.

    Memory is bounded by a few windows. With the decord backend, unless ``in_process``, decord runs in a child
    process that is killed when no window arrives within ``config.timeout_s`` (``DecodeError("timeout")``);
    the ffmpeg backend's ffmpeg process is killed the same way (``in_process`` does not apply). ``usage``, when
    given, receives the CPU seconds of that child process once the windows end (0 in process).
    """
    path = check_file(path)
    if config.backend == "ffmpeg":
        return decode_ffmpeg.iter_windows(path, info, config, usage)
    if in_process:
        return decode_worker.iter_windows(path, info, config)
    return iter_windows_in_child(path, info, config, decode_worker.iter_windows, usage)
