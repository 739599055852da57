"""The audio track of a video: decoded by ffmpeg (via ffmpeg-python) to 16 kHz mono float32 through a pipe."""

from __future__ import annotations

import os
import subprocess
import threading

import ffmpeg as ffmpeg_python
import numpy as np

from mcn.extract.decode_types import CORRUPT_HINTS, DecodeError, check_file, ffmpeg_binary, ffmpeg_missing


def read_audio(
    path: str | os.PathLike, sample_rate: int = 16000, ffmpeg: str | None = None, timeout_s: float = 300.0
) -> np.ndarray:
    """The first audio track as mono float32 at ``sample_rate``, decoded by ffmpeg through a pipe.

    Raises :class:`DecodeError` (``no_audio_stream`` when the file has none, ``timeout`` after ``timeout_s``).
    """
    path = check_file(path)
    stream = ffmpeg_python.input(path).output(
        "pipe:", map="0:a:0", format="f32le", acodec="pcm_f32le", ac=1, ar=sample_rate
    )
    cmd = stream.global_args("-hide_banner", "-nostdin", "-loglevel", "error").compile(
        cmd=ffmpeg_binary(ffmpeg)
    )
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as error:
        raise ffmpeg_missing(cmd[0]) from error
    stderr_chunks: list[bytes] = []
    drain = threading.Thread(
        target=lambda: stderr_chunks.extend(iter(lambda: proc.stderr.read(65536), b"")), daemon=True
    )
    drain.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        proc.kill()

    watchdog = threading.Timer(timeout_s, kill)
    watchdog.start()
    try:
        chunks = list(iter(lambda: proc.stdout.read(1 << 20), b""))
        returncode = proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        drain.join()
        proc.stdout.close()
        proc.stderr.close()
    if timed_out.is_set():
        raise DecodeError("timeout", f"audio decoding ran longer than {timeout_s:g} s")
    stderr = b"".join(stderr_chunks).decode("utf-8", errors="replace")
    if returncode != 0:
        if "matches no streams" in stderr:
            raise DecodeError("no_audio_stream", f"{path} has no audio stream")
        hint = next((h for h in CORRUPT_HINTS if h in stderr), stderr.strip()[-200:])
        raise DecodeError("corrupt", f"{path}: {hint}")
    data = b"".join(chunks)
    return np.frombuffer(data[: len(data) - len(data) % 4], dtype="<f4").astype(np.float32)
