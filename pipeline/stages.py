"""The Ray stages of the extraction job: a decode generator task per video, model actor pools, an ASR actor.

Why Ray tasks/actors driven by one loop (:mod:`.job`) rather than a Ray Data chain: a video is cut into frame
windows whose features must be put back together in order before the video can be written, every video must
end up in exactly one place (a shard or the failures table) even when workers die, and frames in flight must be
bounded. A driver that owns every hand-over makes all three explicit: it pulls a window from a decode task only
when fewer than ``stages.windows_in_flight`` are queued at the models (backpressure), re-queues the videos of
a dead worker, and writes whole videos.

- :func:`decode_video` (CPU task, ``num_cpus=1``): probe, log-mel of the whole audio track, sidecar captions,
  then a stream of frame windows (Ray streaming generator, at most ``decode_lookahead`` windows ahead).
  Items alternate a small tag and its payload so the driver only fetches the tags.
- :class:`ModelActor` (actor pool per model, loads its network once, ``num_gpus`` when GPUs exist).
- :class:`AsrActor` (loads the speech recogniser once).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray

from mcn.extract import ExtractConfig
from mcn.pipeline.config import AsrConfig
from mcn.pipeline.inputs import VideoItem

# A decode task yields small tag dicts, each followed by ``num_payloads`` large objects the driver never fetches:
# header {"info", "logmel", "captions", "caption_source", "needs_asr"}, then the waveform when ASR is needed;
# window {"start_s"}, then frames_2d (T,H,W,3) uint8 and frames_3d (T,112,112,3) uint8; end; failed {"stage",
# "reason", "detail"}. Every tag also carries the decode task's busy wall and CPU seconds so far.
TAG_HEADER, TAG_WINDOW, TAG_END, TAG_FAILED = "header", "window", "end", "failed"
CLIP_FRAMES = 16
FEATURE_DIM = 2048


def cpu_seconds() -> float:
    """CPU time of this process (all threads). Child processes (the decoder's, ffmpeg) are not included."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


class StageTimer:
    """Wall and CPU seconds spent inside ``with timer:`` blocks."""

    def __init__(self) -> None:
        self.wall_s = self.cpu_s = 0.0

    def __enter__(self) -> StageTimer:
        self._wall, self._cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s += time.perf_counter() - self._wall
        self.cpu_s += cpu_seconds() - self._cpu


def _limit_threads(num_threads: int) -> None:
    """One process per core: keep torch/OpenMP from starting a thread per core in every worker.

    torch is only configured where it is already loaded (model actors); decode workers never import it.
    """
    os.environ["OMP_NUM_THREADS"] = str(num_threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(num_threads)


@ray.remote(num_cpus=1)
def warm_up_decoder(torch_threads: int) -> bool:
    """Start a decode worker and import the decoding stack (librosa, decord) before the clock starts.

    Ray reuses the worker for the decode tasks that follow, so the first videos do not pay for the imports.
    """
    _limit_threads(torch_threads)
    from mcn.extract import audio, decode, text  # noqa: F401

    return True


def decode_stream(item: VideoItem, config: ExtractConfig, asr_enabled: bool) -> Iterator[tuple[dict, list]]:
    """(tag, payloads) pairs for one video; a DecodeError or broken caption file ends it with a failure tag."""
    from mcn.extract import audio, decode, text

    stage = "decode"
    try:
        info = decode.probe(item.video_path, timeout_s=config.decode.timeout_s)
        waveform = None
        if info.has_audio:
            stage = "audio"
            waveform = decode.read_audio(
                item.video_path, ffmpeg=config.decode.ffmpeg, timeout_s=config.decode.timeout_s
            )
        logmel = (
            None if waveform is None else np.asarray(audio.log_mel(waveform), np.float32).astype(np.float16)
        )
        stage = "captions"
        captions, source = [], "none"
        if item.caption_path is not None:
            captions, source = text.read_captions(item.caption_path), text.caption_format(item.caption_path)
        needs_asr = asr_enabled and item.caption_path is None and waveform is not None
        header = {
            "tag": TAG_HEADER,
            "info": info,
            "logmel": logmel,
            "captions": captions,
            "caption_source": source,
            "needs_asr": needs_asr,
        }
        yield header, [waveform] if needs_asr else []
        del waveform
        stage = "decode"
        # 3D frames that do not fill a 16-frame clip carry over to the next window, so that (as in
        # mcn.extract.extract_video) only the end of the video is padded.
        carry_3d = None
        for window in decode.iter_frame_windows(item.video_path, info, config.decode):
            frames_3d = (
                window.frames_3d_THWC
                if carry_3d is None
                else np.concatenate([carry_3d, window.frames_3d_THWC])
            )
            num_whole = len(frames_3d) - len(frames_3d) % CLIP_FRAMES
            carry_3d = frames_3d[num_whole:]
            yield (
                {"tag": TAG_WINDOW, "start_s": window.start_s},
                [window.frames_2d_THWC, frames_3d[:num_whole]],
            )
        if carry_3d is not None and len(carry_3d):
            yield {"tag": TAG_WINDOW, "start_s": None}, [np.zeros((0, 1, 1, 3), np.uint8), carry_3d]
        yield {"tag": TAG_END}, []
    except decode.DecodeError as error:
        yield {"tag": TAG_FAILED, "stage": stage, "reason": error.reason, "detail": error.detail}, []
    except text.CaptionError as error:
        yield {"tag": TAG_FAILED, "stage": "captions", "reason": "bad_captions", "detail": str(error)}, []


@ray.remote(num_cpus=1, max_retries=0)
def decode_video(
    item: VideoItem, config: ExtractConfig, asr_enabled: bool, torch_threads: int
) -> Iterator[Any]:
    """Ray streaming generator over :func:`decode_stream`: yields tag, payload..., tag, payload..., ...

    ``max_retries=0``: when the worker dies the driver re-queues the whole video (windows already handed over
    belong to the dead attempt), which keeps every video's windows from one decode pass.
    """
    _limit_threads(torch_threads)
    timer, stream = StageTimer(), decode_stream(item, config, asr_enabled)
    while True:
        with timer:  # time blocked by backpressure (in the yields below) is not decoding time
            step = next(stream, None)
        if step is None:
            return
        tag, payloads = step
        yield {**tag, "num_payloads": len(payloads), "busy_s": timer.wall_s, "cpu_s": timer.cpu_s}
        for payload in payloads:  # noqa: UP028 (Ray calls send() on the generator; a list iterator has none)
            yield payload


def build_model_extractor(kind: str, config: ExtractConfig) -> Any:
    """The 2D or 3D extractor of an extraction config (loads the network)."""
    from mcn.extract.extractors import Clip3DExtractor, Frame2DExtractor

    models, runtime = config.models, config.runtime
    if kind == "2d":
        return Frame2DExtractor(
            models.model_2d,
            models.weights_2d,
            models.download_2d,
            runtime.device,
            runtime.batch_2d,
            runtime.precision_2d,
        )
    return Clip3DExtractor(
        models.model_3d, models.weights_3d, runtime.device, runtime.batch_3d, runtime.precision_3d
    )


@ray.remote(max_restarts=-1, max_task_retries=2)
class ModelActor:
    """One network loaded once; ``run`` maps a frame window to ((T, 2048) float16 features, busy seconds).

    A killed actor comes back (``max_restarts=-1``) and Ray re-sends the calls it had in flight or that arrived
    while it restarted (``max_task_retries=2``; a call is a pure function of its frames, so a retry cannot
    duplicate anything). A call that still fails reaches the driver, which re-queues or fails the video.
    """

    def __init__(self, kind: str, config: ExtractConfig, torch_threads: int):
        self.kind = kind
        self.extractor = build_model_extractor(kind, config)
        _limit_threads(torch_threads)

    def run(self, frames_THWC: np.ndarray) -> tuple[np.ndarray, StageTimer]:
        """(features, time spent); an empty window (a trailing 3D remainder's 2D half) gives (0, 2048)."""
        with StageTimer() as timer:
            if len(frames_THWC) == 0:
                return np.zeros((0, FEATURE_DIM), np.float16), timer
            feats = self.extractor([frames_THWC]).only()
        return feats, timer

    def ready(self) -> bool:
        return True


@ray.remote(max_restarts=-1, max_task_retries=2)  # as ModelActor
class AsrActor:
    """Speech recogniser loaded once; ``__call__`` maps a 16 kHz waveform to timed captions."""

    def __init__(self, config: AsrConfig, device: str, torch_threads: int):
        import torch  # noqa: F401 (so that _limit_threads configures it)

        from mcn.pipeline.asr import build_asr

        _limit_threads(torch_threads)
        self.asr = build_asr(
            config.backend,
            config.model_path,
            device,
            config.compute_type,
            config.language,
            config.beam_size,
            torch_threads,
        )

    def run(self, waveform_16k: np.ndarray) -> tuple[list[tuple[float, float, str]], StageTimer]:
        with StageTimer() as timer:
            captions = self.asr(waveform_16k)
        return captions, timer

    def ready(self) -> bool:
        return True


class ActorPool:
    """Actors of one stage; each call goes to the actor with the fewest calls in flight."""

    def __init__(self, actors: list) -> None:
        self.actors = actors
        self.in_flight = [0] * len(actors)
        self.owner: dict[ray.ObjectRef, int] = {}

    def submit(self, *args: Any) -> ray.ObjectRef:
        index = min(range(len(self.actors)), key=self.in_flight.__getitem__)
        ref = self.actors[index].run.remote(*args)
        self.in_flight[index] += 1
        self.owner[ref] = index
        return ref

    def done(self, ref: ray.ObjectRef) -> None:
        index = self.owner.pop(ref, None)
        if index is not None:
            self.in_flight[index] -= 1
