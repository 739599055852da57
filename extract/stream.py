"""One video's extraction as a stream, and the assembly of its features: the one code path for every caller.

:class:`VideoStream` walks one video file: probe → sidecar captions → audio track and log-mel → frame windows.
It yields a :class:`VideoHeader` (metadata, log-mel, captions, and the waveform when speech recognition must
make the captions; otherwise the log-mel is computed from the track in chunks, in memory that does not grow
with the track's length), then one :class:`ModelWindow` per decode window: the window's frames for the 2D and
the 3D network. 3D frames that do not fill a 16-frame clip carry over to the next window, so only the end of the video
is padded. This is the only place that calls the decoding layer (:mod:`mcn.extract.decode`, :mod:`.audio`).
A remote video (a URL, see :mod:`mcn.storage`) is fetched first into a temporary local file of at most
:data:`MAX_FETCH_BYTES` (decoders need a local path), which is removed when the stream ends, however it ends.

:class:`VideoAssembly` collects what the models and the speech recogniser return for one video, in any order,
and gives the :class:`VideoFeatures` once every part is in.

:class:`mcn.extract.VideoExtractor` runs both in one process; the Ray job runs the stream in a decode task,
sends the windows' frames to model actors in batches filled across videos, and assembles each video the same
way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mcn import storage
from mcn.extract.batching import MODEL_KINDS
from mcn.extract.constants import AUDIO_SAMPLE_RATE, CLIP_FRAMES, FEATURE_DIM
from mcn.extract.decode import DecodeConfig, VideoInfo, iter_frame_windows, probe, read_audio, read_log_mel

if TYPE_CHECKING:
    from mcn.extract.extractors import CaptionTokenizer
    from mcn.extract.text import Caption

# The largest video fetched from object storage: the temporary file's bound (HowTo100M's longest are ~2 GB).
MAX_FETCH_BYTES = 16 << 30


@dataclass
class VideoFeatures:
    """Everything extracted from one video. Feature arrays are float16."""

    info: VideoInfo
    feat_2d: np.ndarray  # (T2, 2048), 1 per second, L2-normalised rows
    feat_3d: np.ndarray  # (T3, 2048), one per 16 frames at 24 fps, L2-normalised rows
    logmel: np.ndarray | None  # (40, Ta), 100 per second; None = the video has no audio stream
    captions: list[tuple[float, float, str]]
    caption_source: str  # "vtt" | "srt" | "csv" | "json" | "asr" | "none"
    caption_token_ids: list[np.ndarray] | None = (
        None  # int32 ids per caption when config.text.word_vectors is set
    )


@dataclass
class VideoHeader:
    """What the stream knows before the first frame window."""

    info: VideoInfo
    logmel: np.ndarray | None  # (40, Ta) float16; None = no audio stream
    captions: list[Caption]  # the sidecar file's; empty when speech recognition makes them
    caption_source: str
    needs_asr: bool = False  # speech recognition makes the captions (from ``waveform_16k``)
    waveform_16k: np.ndarray | None = None  # float32 mono audio when ``needs_asr`` (the job sends it apart)


@dataclass
class ModelWindow:
    """Window ``index`` of a video: uint8 frames for each network. ``frames_3d_THWC`` holds whole 16-frame clips,
    except in the video's last window (which may be a window of 3D frames only, 0 2D frames)."""

    index: int
    frames_2d_THWC: np.ndarray
    frames_3d_THWC: np.ndarray

    def frames(self, kind: str) -> np.ndarray:
        return self.frames_2d_THWC if kind == "2d" else self.frames_3d_THWC


class VideoStream:
    """``for part in VideoStream(...)``: a :class:`VideoHeader`, then :class:`ModelWindow` s in order.

    Raises ``DecodeError`` for an unreadable video or audio track, ``CaptionError`` for a broken caption
    file and :class:`mcn.storage.FetchError` for a remote video that cannot be fetched; :attr:`stage` names the
    step that was running ("fetch", "decode", "captions" or "audio"). With ``transcribe``,
    a video with audio and no caption file gets its waveform in the header, for speech recognition.
    """

    def __init__(
        self,
        video_path: str | Path,
        caption_path: str | Path | None,
        decode: DecodeConfig,
        transcribe: bool = False,
    ):
        self.video_path = video_path
        self.caption_path = caption_path
        self.decode = decode
        self.transcribe = transcribe
        self.stage = "decode"

    def __iter__(self) -> Iterator[VideoHeader | ModelWindow]:
        if not storage.is_remote(self.video_path):
            yield from self._parts(self.video_path)
            return
        self.stage = "fetch"
        with storage.fetch_to_temporary(self.video_path, MAX_FETCH_BYTES, self.decode.timeout_s) as local:
            yield from self._parts(local)

    def _parts(self, video_path: str | Path) -> Iterator[VideoHeader | ModelWindow]:
        from mcn.extract import audio, text

        decode = self.decode
        self.stage = "decode"
        info = probe(video_path, decode.timeout_s)
        if video_path != self.video_path:  # a fetched copy: the info names the video, not the copy
            info = dataclasses.replace(info, path=str(self.video_path))
        # Sidecar captions before the audio: a broken caption file fails fast, before the expensive decoding.
        self.stage = "captions"
        captions, source = [], "none"
        if self.caption_path is not None:
            captions = text.read_captions(self.caption_path)
            source = text.caption_format(self.caption_path)
        logmel = waveform = None
        if info.has_audio:
            self.stage = "audio"
            if self.transcribe and self.caption_path is None:  # speech recognition takes the whole waveform
                waveform = read_audio(video_path, AUDIO_SAMPLE_RATE, decode.ffmpeg, decode.timeout_s)
                logmel = audio.log_mel(waveform).astype(np.float16)
            else:  # in chunks: memory does not grow with the track's length
                logmel = read_log_mel(video_path, decode.ffmpeg, decode.timeout_s)
        needs_asr = waveform is not None
        yield VideoHeader(info, logmel, captions, source, needs_asr, waveform if needs_asr else None)
        del waveform
        self.stage = "decode"
        index, carry_3d, last_2d = 0, None, None
        for window in iter_frame_windows(video_path, info, decode):
            frames_3d = (
                window.frames_3d_THWC
                if carry_3d is None
                else np.concatenate([carry_3d, window.frames_3d_THWC])
            )
            num_whole = len(frames_3d) - len(frames_3d) % CLIP_FRAMES
            carry_3d, last_2d = frames_3d[num_whole:], window.frames_2d_THWC
            yield ModelWindow(index, window.frames_2d_THWC, frames_3d[:num_whole])
            index += 1
        if carry_3d is not None and len(carry_3d):
            no_2d = np.zeros((0, *last_2d.shape[1:]), np.uint8)
            yield ModelWindow(index, no_2d, carry_3d)


class VideoAssembly:
    """One video's parts as they come back (header, captions, each window's features, in any order)."""

    def __init__(self) -> None:
        self.header: VideoHeader | None = None
        self.captions: list[Caption] | None = None
        self.num_windows = 0
        self.stream_done = False
        self._feats: dict[str, dict[int, np.ndarray]] = {kind: {} for kind in MODEL_KINDS}

    def add_header(self, header: VideoHeader) -> None:
        self.header = header
        if not header.needs_asr:
            self.captions = header.captions

    def add_window(self) -> int:
        """Count one more window; returns its index."""
        self.num_windows += 1
        return self.num_windows - 1

    def set_features(self, kind: str, window: int, feats_ND: np.ndarray) -> None:
        assert window not in self._feats[kind], (kind, window)
        self._feats[kind][window] = feats_ND

    def window_done(self, window: int) -> bool:
        return all(window in self._feats[kind] for kind in MODEL_KINDS)

    def set_captions(self, captions: list[Caption]) -> None:
        """Captions from speech recognition."""
        self.captions = captions

    @property
    def complete(self) -> bool:
        return (
            self.stream_done
            and self.captions is not None
            and all(len(self._feats[kind]) == self.num_windows for kind in MODEL_KINDS)
        )

    def features(self, tokenizer: CaptionTokenizer | None = None) -> VideoFeatures:
        """The video's features, windows in order; caption token ids when a tokenizer is given."""
        assert self.complete and self.header is not None and self.captions is not None

        def stacked(kind: str) -> np.ndarray:
            feats = [self._feats[kind][i] for i in range(self.num_windows)]
            return np.concatenate(feats) if feats else np.zeros((0, FEATURE_DIM), np.float16)

        header = self.header
        return VideoFeatures(
            info=header.info,
            feat_2d=stacked("2d"),
            feat_3d=stacked("3d"),
            logmel=header.logmel,
            captions=self.captions,
            caption_source="asr" if header.needs_asr else header.caption_source,
            caption_token_ids=tokenizer([self.captions]).only() if tokenizer is not None else None,
        )
