"""Metadata of a video file from PyAV (libavformat's own structures, no text parsing, no ffprobe).

Streams, codecs, frame rate and container come from the demuxer. The duration is the first video stream's:
its header duration where the container records one per stream (MP4, MOV), else the end of its last packet
(Matroska, WebM), so a short video with a long audio track has the video's duration, not the container's. The
number of frames is the header's sample count, else the number of video packets. The display rotation comes
from the first decoded frame, to which the decoder attaches the stream's display matrix; decoding that frame also
shows that a decoder for the codec exists (``unsupported_codec`` when none does).

Cover art (an ``attached_pic`` video stream, as in many downloaded MP4s) is not the video.
"""

from __future__ import annotations

import os
import time
from fractions import Fraction

import av

from mcn.extract.decode_types import DecodeError, VideoInfo, check_file

# Packets the probe may feed the decoder while looking for the first frame (broken leading packets are skipped).
MAX_PACKETS_TO_FIRST_FRAME = 256
DEADLINE_CHECK_PACKETS = 1024  # how often the packet-counting loop looks at the clock


def probe(path: str | os.PathLike, timeout_s: float = 60.0) -> VideoInfo:
    """What :class:`VideoInfo` holds about ``path``. Raises :class:`DecodeError`.

    ``timeout_s`` bounds the whole probe: each read from the file (PyAV's I/O timeout) and the packet count.
    """
    path = check_file(path)
    deadline = time.monotonic() + timeout_s
    try:
        container = av.open(path, timeout=timeout_s)
    except av.error.ExitError as error:  # the I/O interrupt: a read stalled past the timeout
        raise DecodeError("timeout", f"opening {path} took longer than {timeout_s:g} s") from error
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        raise DecodeError("corrupt", f"{path}: {error}") from error
    with container:
        return _probe_open(path, container, deadline, timeout_s)


def _probe_open(path: str, container, deadline: float, timeout_s: float) -> VideoInfo:
    videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    audios = list(container.streams.audio)
    if not videos:
        raise DecodeError("no_video_stream", f"{path} has no video stream")
    stream = videos[0]
    if stream.codec_context is None:
        raise DecodeError("unsupported_codec", f"{path}: no decoder for the video stream's codec")
    stream.codec_context.thread_count = 1  # one frame is decoded: threads would only add start-up work
    time_base = stream.time_base or Fraction(1, 1)
    num_frames = stream.frames
    duration = float(stream.duration * time_base) if stream.duration else None
    fps = float(stream.average_rate or stream.base_rate or 0)
    need_count = num_frames <= 0 or duration is None
    rotation = None
    first_pts = end_pts = None
    counted = 0
    to_first_frame = MAX_PACKETS_TO_FIRST_FRAME
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet at the end
                continue
            counted += 1
            if packet.pts is not None:
                step = packet.duration or (round(1 / (fps * time_base)) if fps else 0)
                first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
                end_pts = packet.pts + step if end_pts is None else max(end_pts, packet.pts + step)
            if rotation is None and to_first_frame > 0:
                to_first_frame -= 1
                rotation = _first_frame_rotation(packet)
            if rotation is not None and not need_count:
                break
            if counted % DEADLINE_CHECK_PACKETS == 0 and time.monotonic() > deadline:
                raise DecodeError("timeout", f"probing {path} took longer than {timeout_s:g} s")
        if rotation is None and to_first_frame > 0:
            rotation = _flushed_rotation(stream)
    except av.error.ExitError as error:
        raise DecodeError("timeout", f"reading {path} stalled for more than {timeout_s:g} s") from error
    except av.error.FFmpegError as error:
        if rotation is None:
            raise DecodeError("corrupt", f"{path}: {error}") from error
    if need_count:
        num_frames = counted
        duration = float((end_pts - first_pts) * time_base) if first_pts is not None else 0.0
    if num_frames == 0:
        raise DecodeError("empty", f"{path} has no video frames")
    if rotation is None:
        raise DecodeError("corrupt", f"{path}: no video frame could be decoded")
    return VideoInfo(
        path=path,
        duration=duration,
        fps=fps,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        num_frames=num_frames,
        has_audio=bool(audios),
        video_codec=stream.codec_context.codec.canonical_name,
        audio_codec=(audios[0].codec_context.codec.canonical_name if audios[0].codec_context else "unknown")
        if audios
        else None,
        container=container.format.name,
        rotation=rotation,
    )


def _first_frame_rotation(packet) -> int | None:
    """The display rotation of the first frame this packet completes (0, 90, 180 or 270), None if none yet."""
    try:
        frames = packet.decode()
    except av.error.InvalidDataError:  # a damaged packet: the decoder carries on with the next one
        return None
    return _rotation(frames[0]) if frames else None


def _flushed_rotation(stream) -> int | None:
    """The rotation of the first frame the decoder still holds at the end (videos of a few frames)."""
    try:
        frames = stream.codec_context.decode(None)
    except av.error.FFmpegError:
        return None
    return _rotation(frames[0]) if frames else None


def _rotation(frame) -> int:
    return round(frame.rotation / 90) % 4 * 90
