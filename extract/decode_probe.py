"""Metadata of a video file from the stderr of ``ffmpeg -i FILE -map 0:v:0 -c copy -f null -``.

The header gives duration, frame rate, size, codecs, streams and the display rotation; the copy pass (demux only,
no decoding) gives the exact number of video packets. No ffprobe is needed. A video codec that ffmpeg has no
decoder for (``ffmpeg -codecs``) is ``unsupported_codec``.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess

from mcn.extract.decode_types import (
    CORRUPT_HINTS,
    DecodeError,
    VideoInfo,
    check_file,
    ffmpeg_binary,
    ffmpeg_missing,
)


def _run_ffmpeg(cmd: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as error:
        raise DecodeError("timeout", f"ffmpeg ran longer than {timeout_s:g} s") from error
    except FileNotFoundError as error:
        raise ffmpeg_missing(cmd[0]) from error


_STREAM = re.compile(r"Stream #\d+:\d+\S*: (Video|Audio): (.*)")
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_SIZE = re.compile(r"(?:^|[ ,])(\d{1,5})x(\d{1,5})(?=[ ,\]]|$)")
_RATE = re.compile(r"([\d.]+)(k?) (fps|tbr)")
_FRAMES = re.compile(r"frame=\s*(\d+)")
_ROTATION = re.compile(r"display ?matrix: rotation of (-?[\d.]+) degrees", re.IGNORECASE)
_TIME = re.compile(r"time=(\d+):(\d+):(\d+(?:\.\d+)?)")


def _hms(match: re.Match) -> float:
    return int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3])


def _first_rate(text: str) -> float:
    rates = {kind: float(value) * (1000 if k else 1) for value, k, kind in _RATE.findall(text)}
    return rates.get("fps") or rates.get("tbr") or 0.0


@functools.lru_cache(maxsize=8)
def decodable_codecs(ffmpeg: str) -> frozenset[str] | None:
    """Names of the codecs this ffmpeg binary can decode (``ffmpeg -codecs``); None when it cannot tell."""
    try:
        result = subprocess.run(
            [ffmpeg, "-hide_banner", "-codecs"], stdin=subprocess.DEVNULL, capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    _, _, table = result.stdout.decode("utf-8", errors="replace").partition("-------")
    rows = (line.split() for line in table.splitlines())
    names = frozenset(row[1] for row in rows if len(row) >= 2 and len(row[0]) == 6 and row[0][0] == "D")
    return names if result.returncode == 0 and names else None


def _rotation(header: str, video_line: str) -> int:
    """The display rotation of the stream whose header line is ``video_line``, as 0, 90, 180 or 270."""
    section = header[header.index(video_line) :]
    following = section.find("Stream #", len(video_line))
    match = _ROTATION.search(section if following < 0 else section[:following])
    return round(float(match[1]) / 90) % 4 * 90 if match else 0


def probe(path: str | os.PathLike, ffmpeg: str | None = None, timeout_s: float = 60.0) -> VideoInfo:
    """Read a video's metadata from ffmpeg's stderr (no ffprobe). Raises :class:`DecodeError`."""
    path = check_file(path)
    cmd = [
        ffmpeg_binary(ffmpeg),
        "-hide_banner",
        "-nostdin",
        "-i",
        path,
        "-map",
        "0:v:0?",
        "-c",
        "copy",
        "-f",
        "null",
        "-",
    ]
    stderr = _run_ffmpeg(cmd, timeout_s).stderr.decode("utf-8", errors="replace")
    header, _, progress = stderr.partition("Output #0")
    if "Input #0" not in header:
        hint = next((h for h in CORRUPT_HINTS if h in header), None)
        raise DecodeError("corrupt", f"{path}: {hint or header.strip().splitlines()[-1:]}")
    streams = [match for match in _STREAM.finditer(header) if "(attached pic)" not in match[2]]
    videos = [match for match in streams if match[1] == "Video"]
    audios = [match[2] for match in streams if match[1] == "Audio"]
    if not videos:
        raise DecodeError("no_video_stream", f"{path} has no video stream")
    video = videos[0][2]
    video_codec = video.split()[0].rstrip(",")
    if video_codec == "none":
        raise DecodeError("unsupported_codec", f"{path}: ffmpeg cannot identify the video codec")
    decodable = decodable_codecs(cmd[0])
    if decodable is not None and video_codec not in decodable:
        raise DecodeError("unsupported_codec", f"{path}: ffmpeg has no decoder for {video_codec}")
    size = _SIZE.search(video)
    if size is None:
        raise DecodeError("corrupt", f"{path}: no frame size in the video stream header")
    frames = _FRAMES.findall(progress)
    num_frames = int(frames[-1]) if frames else 0
    if num_frames == 0:
        raise DecodeError("empty", f"{path} has no video frames")
    duration = _DURATION.search(header)
    times = list(_TIME.finditer(progress))
    if duration is not None:
        seconds = _hms(duration)
    elif times:
        seconds = _hms(times[-1])
    else:
        seconds = 0.0
    container = re.search(r"Input #0, (\S+), from", header)
    return VideoInfo(
        path=path,
        duration=seconds,
        fps=_first_rate(video),
        width=int(size[1]),
        height=int(size[2]),
        num_frames=num_frames,
        has_audio=bool(audios),
        video_codec=video_codec,
        audio_codec=audios[0].split()[0].rstrip(",") if audios else None,
        container=container[1].rstrip(",") if container else "",
        rotation=_rotation(header, videos[0][0]),
    )
