"""The Ray stages of the extraction job: they only schedule the per-video stream of :mod:`mcn.extract.stream`.

Why Ray tasks/actors driven by one loop (:mod:`.job`) rather than a Ray Data chain: a video is cut into frame
windows whose features must be put back together in order before the video can be written, the models' batches
are filled with windows of several videos, every video must end up in exactly one place (a shard or the
failures table) even when workers die, and frames in flight must be bounded. A driver that owns every hand-over
makes all of that explicit.

- :func:`decode_video` (CPU task, ``num_cpus=1``): runs :class:`~mcn.extract.stream.VideoStream` (probe,
  captions, log-mel, frame windows) as a Ray streaming generator, at most ``decode_lookahead`` windows ahead.
  Items alternate a small tag and its payloads so the driver only fetches the tags.
- :class:`ModelActor` (actor pool per model, loads its network once, ``num_gpus`` when GPUs exist): one
  forward pass over a batch that the driver filled with pieces of windows of several videos.
- :class:`AsrActor` (loads the speech recogniser once).
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray

from mcn import storage
from mcn.extract import ExtractConfig, load_model
from mcn.extract.asr import AsrConfig
from mcn.extract.batching import MODEL_KINDS, batch_group, num_rows
from mcn.extract.stream import VideoHeader, VideoStream
from mcn.pipeline.inputs import VideoItem

# A decode task yields small tag dicts, each followed by ``num_payloads`` large objects the driver never fetches:
# header {"header": VideoHeader without its waveform}, then the waveform when ASR is needed;
# window {"index", "frames": {kind: frame count}, "rows": {kind: batch rows}, "group": {kind: batch group}},
# then frames_2d (T,H,W,3) uint8 and frames_3d (T,112,112,3) uint8; end; failed {"stage", "reason", "detail"}.
# Every tag also carries the decode task's busy wall and CPU seconds so far.
TAG_HEADER, TAG_WINDOW, TAG_END, TAG_FAILED = "header", "window", "end", "failed"


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
    """(tag, payloads) pairs of one video's stream; a failed fetch of a remote video, a DecodeError or a broken
    caption file ends it with a failure tag."""
    from mcn.extract import decode, text

    stream = VideoStream(item.video_path, item.caption_path, config.decode, transcribe=asr_enabled)
    try:
        for part in stream:
            if isinstance(part, VideoHeader):
                header = dataclasses.replace(part, waveform_16k=None)  # the waveform goes as a payload
                yield {"tag": TAG_HEADER, "header": header}, [part.waveform_16k] if part.needs_asr else []
                continue
            frames = {kind: part.frames(kind) for kind in MODEL_KINDS}
            window = {
                "tag": TAG_WINDOW,
                "index": part.index,
                "frames": {kind: len(f) for kind, f in frames.items()},
                "rows": {kind: num_rows(kind, len(f)) for kind, f in frames.items()},
                "group": {kind: batch_group(kind, f) for kind, f in frames.items()},
            }
            yield window, [frames[kind] for kind in MODEL_KINDS]
        yield {"tag": TAG_END}, []
    except storage.FetchError as error:
        yield {"tag": TAG_FAILED, "stage": "fetch", "reason": error.reason, "detail": error.detail}, []
    except decode.DecodeError as error:
        yield {"tag": TAG_FAILED, "stage": stream.stage, "reason": error.reason, "detail": error.detail}, []
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


@ray.remote(max_restarts=-1, max_task_retries=2)
class ModelActor:
    """One network loaded once; ``run`` is one forward pass over a batch of window pieces.

    A killed actor comes back (``max_restarts=-1``) and Ray re-sends the calls it had in flight or that arrived
    while it restarted (``max_task_retries``, set per job by ``stages.model_call_retries``; a call is a pure
    function of its frames, so a retry cannot duplicate anything). A call that still fails reaches the driver,
    which re-queues (or fails) exactly the videos whose pieces the call held.
    """

    def __init__(self, kind: str, config: ExtractConfig, torch_threads: int):
        self.extractor = load_model(kind, config)
        _limit_threads(torch_threads)

    def run(
        self, bounds: list[tuple[int, int]], *frames_THWC: np.ndarray
    ) -> tuple[list[np.ndarray], StageTimer, int, int]:
        """Rows [start, stop) of each frames array (Ray resolves the object refs) -> (features per piece, time
        spent, forward passes, rows through them)."""
        calls, items = self.extractor.num_calls, self.extractor.num_items
        with StageTimer() as timer:
            feats = self.extractor.run_batch(frames_THWC, bounds)
        return feats, timer, self.extractor.num_calls - calls, self.extractor.num_items - items

    def ready(self) -> bool:
        return True


@ray.remote(max_restarts=-1, max_task_retries=2)  # as ModelActor
class AsrActor:
    """Speech recogniser loaded once; ``__call__`` maps a 16 kHz waveform to timed captions."""

    def __init__(self, config: AsrConfig, device: str, torch_threads: int):
        import torch  # noqa: F401 (so that _limit_threads configures it)

        from mcn.extract.asr import load_asr

        _limit_threads(torch_threads)
        self.asr = load_asr(config, device, torch_threads)

    def run(self, waveform_16k: np.ndarray) -> tuple[list[tuple[float, float, str]], StageTimer]:
        with StageTimer() as timer:
            captions = self.asr(waveform_16k)
        return captions, timer

    def ready(self) -> bool:
        return True


class ActorPool:
    """Actors of one stage; each call goes to the available actor with the fewest calls in flight.

    An actor whose call died is restarting (``max_restarts=-1``): calls sent to it now would fail at once, so
    it takes none until a probe (``ready``, retried by Ray until the actor is back) returns.
    """

    def __init__(self, actors: list) -> None:
        self.actors = actors
        self.in_flight = [0] * len(actors)
        self.owner: dict[ray.ObjectRef, int] = {}
        self.probes: dict[ray.ObjectRef, int] = {}  # probe -> index of an actor that is restarting

    @property
    def available(self) -> list[int]:
        restarting = set(self.probes.values())
        return [index for index in range(len(self.actors)) if index not in restarting]

    @property
    def has_idle(self) -> bool:
        """Some available actor has no call in flight."""
        return any(self.in_flight[index] == 0 for index in self.available)

    def submit(self, *args: Any) -> ray.ObjectRef:
        """Call ``run`` on the least busy available actor (any actor, when all are restarting: Ray holds or
        retries the call as the actor's ``max_task_retries`` says)."""
        index = min(self.available or range(len(self.actors)), key=self.in_flight.__getitem__)
        ref = self.actors[index].run.remote(*args)
        self.in_flight[index] += 1
        self.owner[ref] = index
        return ref

    def done(self, ref: ray.ObjectRef, actor_died: bool = False) -> None:
        """A call came back; when its actor died, hold further calls until the actor answers a probe."""
        index = self.owner.pop(ref, None)
        if index is None:
            return
        self.in_flight[index] -= 1
        if actor_died and index not in self.probes.values():
            self.probes[self.actors[index].ready.options(max_task_retries=-1).remote()] = index

    def probe_done(self, ref: ray.ObjectRef) -> None:
        self.probes.pop(ref)
