"""The audio track of a video: decoded by ffmpeg (via ffmpeg-python) to 16 kHz mono float32 through a pipe.

:func:`iter_audio_chunks` streams the samples; :func:`read_audio` holds the whole track (speech recognition
needs it); :func:`read_log_mel` computes the track's log-mel spectrogram (:mod:`mcn.extract.audio`) without ever
holding the whole track: a track of up to :data:`HOLD_SECONDS` is kept in memory and goes through the whole-track
computation, a longer one is spilled to an unlinked temporary file while its length and mean are counted, then
read back in chunks (the recipe removes the track's mean before anything else, so the mean must be known before
the first frame). Peak memory is then a few MB plus 6 bytes per log-mel value (the float32 dB values and the
float16 result: 86 MB for an hour of audio, where the whole-track computation peaks at about 1.6 GB); the file
holds 4 bytes per sample (230 MB for an hour) and disappears when closed, even if the process is killed.

A track that sends nothing for ``timeout_s`` is ``DecodeError("timeout")``; a file without audio
``no_audio_stream``.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import tempfile
import threading
from collections.abc import Iterator

import ffmpeg as ffmpeg_python
import numpy as np

from mcn.extract.constants import AUDIO_SAMPLE_RATE as SAMPLE_RATE
from mcn.extract.decode_types import CORRUPT_HINTS, DecodeError, check_file, ffmpeg_binary, ffmpeg_missing

CHUNK_BYTES = 1 << 20  # one pipe read: 262,144 samples, 16 s at 16 kHz
HOLD_SECONDS = 60.0  # tracks up to a minute stay in memory (4 MB, about 30 MB while computing the log-mel)
STDERR_TAIL_BYTES = 64 * 1024


def iter_audio_chunks(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    ffmpeg: str | None = None,
    timeout_s: float = 300.0,
) -> Iterator[np.ndarray]:
    """The first audio track as consecutive float32 mono chunks at ``sample_rate`` (up to 16 s each).

    Raises :class:`DecodeError` once the chunks end (``no_audio_stream``, ``corrupt``) or when ffmpeg sends
    nothing for ``timeout_s`` (``timeout``). Closing the generator early stops ffmpeg.
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
    tail = bytearray()

    def drain() -> None:
        for piece in iter(lambda: proc.stderr.read(65536), b""):
            tail.extend(piece)
            del tail[:-STDERR_TAIL_BYTES]

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    fd = proc.stdout.fileno()
    leftover = b""  # a sample split across two reads
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], timeout_s)
            if not ready:
                raise DecodeError("timeout", f"no audio from ffmpeg within {timeout_s:g} s: {path}")
            data = os.read(fd, CHUNK_BYTES)
            if not data:
                break
            data = leftover + data
            usable = len(data) - len(data) % 4
            leftover = data[usable:]
            if usable:
                yield np.frombuffer(data[:usable], dtype="<f4").astype(np.float32)
        returncode = proc.wait()
        drainer.join()
        if returncode != 0:
            stderr = tail.decode("utf-8", errors="replace")
            if "matches no streams" in stderr:
                raise DecodeError("no_audio_stream", f"{path} has no audio stream")
            hint = next((h for h in CORRUPT_HINTS if h in stderr), stderr.strip()[-200:])
            raise DecodeError("corrupt", f"{path}: {hint}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        drainer.join()
        proc.stdout.close()
        proc.stderr.close()


def read_audio(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    ffmpeg: str | None = None,
    timeout_s: float = 300.0,
) -> np.ndarray:
    """The whole first audio track as mono float32 at ``sample_rate`` (see :func:`iter_audio_chunks`)."""
    chunks = list(iter_audio_chunks(path, sample_rate, ffmpeg, timeout_s))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def read_log_mel(
    path: str | os.PathLike,
    ffmpeg: str | None = None,
    timeout_s: float = 300.0,
    hold_seconds: float = HOLD_SECONDS,
) -> np.ndarray:
    """The (40, T) float16 log-mel spectrogram of the first audio track, in memory bounded by the result.

    Equal to ``audio.log_mel(read_audio(path))`` within float rounding (exactly that up to ``hold_seconds``).
    """
    from mcn.extract import audio  # librosa and scipy load only where a log-mel is computed

    hold_samples = int(hold_seconds * SAMPLE_RATE)
    held: list[np.ndarray] = []
    num_samples, total = 0, 0.0
    spill = None  # the temporary file of a long track
    with contextlib.ExitStack() as closing:
        for chunk in iter_audio_chunks(path, SAMPLE_RATE, ffmpeg, timeout_s):
            num_samples += len(chunk)
            total += float(chunk.sum(dtype=np.float64))
            if spill is None and num_samples <= hold_samples:
                held.append(chunk)
                continue
            if spill is None:  # the track is long: spill what is held, then everything that follows
                spill = closing.enter_context(tempfile.TemporaryFile(prefix="mcn-audio-"))
                for piece in held:
                    spill.write(piece.tobytes())
                held = []
            spill.write(chunk.tobytes())
        if spill is None:
            return audio.log_mel(np.concatenate(held) if held else np.zeros(0, np.float32)).astype(np.float16)
        spill.seek(0)
        chunks = (
            np.frombuffer(data, dtype=np.float32) for data in iter(lambda: spill.read(CHUNK_BYTES), b"")
        )
        return audio.log_mel_streamed(chunks, num_samples, total / num_samples)
