"""The extraction job: input items -> Ray stages (:mod:`.stages`) -> sharded store (:mod:`.writer`).

One driver loop owns every hand-over (see :mod:`.stages` for why): it keeps ``stages.decode_tasks`` videos
decoding, pulls a frame window from a decode task only while fewer than ``stages.windows_in_flight`` windows are
between decoding and the models, fills each model call with pieces of windows of any videos up to the batch
size (:class:`mcn.extract.batching.BatchFiller`; a partial batch after ``stages.batch_wait_s``), puts each
video's features back together (:class:`mcn.extract.stream.VideoAssembly`) and hands whole videos to the
writer. A video whose worker died, or whose pieces a failed model call held, is re-queued (a fresh attempt, all
of its partial results dropped) up to ``stages.max_attempts`` times; other videos are not touched. A video whose
decoding or captions fail is recorded in the failures table at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
from tqdm import tqdm

from mcn import storage, store
from mcn.configs import save_config
from mcn.errors import MCNError
from mcn.extract.batching import MODEL_KINDS, BatchFiller, Piece
from mcn.extract.constants import FEATURE_DIM
from mcn.extract.stream import VideoAssembly
from mcn.pipeline import stages
from mcn.pipeline.config import PipelineConfig
from mcn.pipeline.inputs import MAX_LISTED, VideoItem, read_inputs, source_conflict
from mcn.pipeline.writer import CONFIG, StoreWriter, extraction_identity, manifest_header

logger = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 10.0  # a cluster's GCS port answers at once; no answer in 10 s is no cluster


def worker_env(config: PipelineConfig, items: list[VideoItem] = ()) -> dict[str, str]:
    """The driver's :data:`mcn.storage.STORE_ENV_VARS` that are set, when the job reads or writes a URL (its
    input, its store or an item's files), minus those the submitted job's runtime env already sets (Ray
    refuses a driver that sets the same variable again)."""
    paths = [config.input, config.out, *(p for i in items for p in (i.video_path, i.caption_path) if p)]
    if not any(storage.is_remote(path) for path in paths if path):
        return {}
    try:
        job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
        given = (job.get("runtime_env") or {}).get("env_vars") or {}
    except (ValueError, AttributeError):
        given = {}
    return {name: value for name, value in storage.store_env().items() if name not in given}


def start_ray(config: PipelineConfig, items: list[VideoItem] = ()) -> bool:
    """Join ``ray.address`` / $RAY_ADDRESS (as under ``ray job submit``) or start a local Ray; True if started.
    On a cluster the driver's object-store settings (:func:`worker_env`) go to the job's workers."""
    if ray.is_initialized():
        return False
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        env = worker_env(config, items)
        runtime_env = {"env_vars": env} if env else None
        ray.init(address=address, log_to_driver=config.ray.log_to_driver, runtime_env=runtime_env)
    else:
        ray.init(
            num_cpus=config.ray.num_cpus,
            num_gpus=config.ray.num_gpus,
            include_dashboard=False,
            log_to_driver=config.ray.log_to_driver,
        )
    return True


@dataclass
class _Video:
    """One attempt at one video, while it is in flight."""

    item: VideoItem
    attempt: int
    generator: Any
    assembly: VideoAssembly = field(default_factory=VideoAssembly)
    expected: deque = field(
        default_factory=deque
    )  # what the generator sends next: "asr" or (kind, window, rows, group)
    open_windows: dict = field(
        default_factory=dict
    )  # window -> its share of the in-flight budget, until done
    decode_done: bool = False

    @property
    def key(self) -> tuple[str, int]:
        return self.item.video_id, self.attempt


@dataclass
class _Call:
    """A model or ASR call in flight: the batch's pieces (keys (video id, attempt, window)), or one video."""

    kind: str
    pieces: list[Piece] = field(default_factory=list)
    video: tuple[str, int] | None = None

    def videos(self) -> set[tuple[str, int]]:
        return {self.video} if self.video is not None else {piece.key[:2] for piece in self.pieces}


def _is_worker_death(error: Exception) -> bool:
    """A dead process (killed worker or actor, lost node): worth another attempt. Our own exceptions are not."""
    return not isinstance(error, ray.exceptions.RayTaskError)


def no_model_calls(config: PipelineConfig) -> dict:
    """``summary.json``'s ``model_calls`` before any call: forward passes and rows (2D frames, 3D clips)."""
    runtime = config.extract.runtime
    return {
        kind: {"calls": 0, "items": 0, "batch": batch}
        for kind, batch in (("2d", runtime.batch_2d), ("3d", runtime.batch_3d))
    }


class _Driver:
    """The loop that owns every hand-over of the job (see the module docstring)."""

    def __init__(self, config: PipelineConfig, writer: StoreWriter, tokenizer: Any, progress: tqdm):
        self.config = config
        self.writer = writer
        self.tokenizer = tokenizer
        self.progress = progress
        resources = ray.cluster_resources()
        num_cpus, num_gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
        st = config.stages
        self.decode_slots = st.decode_tasks or max(1, num_cpus)
        gpus = st.gpus_per_model_actor if num_gpus else 0
        model_options = {
            "num_cpus": st.cpus_per_model_actor,
            "num_gpus": gpus,
            "max_task_retries": st.model_call_retries,
        }
        self.pools = {
            kind: stages.ActorPool(
                [
                    stages.ModelActor.options(**model_options).remote(kind, config.extract, st.torch_threads)
                    for _ in range(count or max(1, num_gpus))
                ]
            )
            for kind, count in (("2d", st.actors_2d), ("3d", st.actors_3d))
        }
        if config.asr.enabled:
            self.pools["asr"] = stages.ActorPool(
                [
                    stages.AsrActor.options(num_cpus=0).remote(config.asr, "cpu", st.torch_threads)
                    for _ in range(st.actors_asr)
                ]
            )
        warm_ups = [stages.warm_up_decoder.remote(st.torch_threads) for _ in range(self.decode_slots)]
        ray.get([actor.ready.remote() for pool in self.pools.values() for actor in pool.actors] + warm_ups)
        self.model_calls = no_model_calls(config)
        self.fillers = {kind: BatchFiller(counts["batch"]) for kind, counts in self.model_calls.items()}
        decode = config.extract.decode
        self.window_frames = {
            "2d": decode.window_seconds * decode.rate_2d,
            "3d": decode.window_seconds * decode.rate_3d,
        }
        self.active: dict[str, _Video] = {}
        self.calls: dict[ray.ObjectRef, _Call] = {}
        self.stage_seconds: Counter = Counter()  # wall seconds inside each stage's work
        self.stage_cpu_seconds: Counter = Counter()  # CPU seconds of the same
        self.failures_by_reason: Counter = Counter()
        self.num_done = 0
        self.video_seconds = 0.0

    # ---- the loop -------------------------------------------------------------------------------------------
    def run(self, todo: list[VideoItem]) -> None:
        self.started, driver_cpu = time.perf_counter(), stages.cpu_seconds()
        queue = deque((item, 0) for item in todo)
        while queue or self.active:
            # A video frees its decode slot once decoded (and transcribed: waveforms waiting for ASR stay
            # bounded), while its last rows may still wait for a batch.
            decoding = sum(
                not (v.decode_done and v.assembly.captions is not None) for v in self.active.values()
            )
            for _ in range(min(len(queue), self.decode_slots - decoding)):
                item, attempt = queue.popleft()
                generator = stages.decode_video.options(
                    _generator_backpressure_num_objects=2 * self.config.stages.decode_lookahead + 1
                ).remote(item, self.config.extract, self.config.asr.enabled, self.config.stages.torch_threads)
                self.active[item.video_id] = _Video(item, attempt, generator)
            windows_in_flight = sum(sum(v.open_windows.values()) for v in self.active.values())
            readable = [
                v.generator
                for v in self.active.values()
                if not v.decode_done
                and (
                    v.assembly.header is None
                    or v.expected
                    or windows_in_flight < self.config.stages.windows_in_flight
                )
            ]
            probes = {ref: pool for pool in self.pools.values() for ref in pool.probes}
            self._submit_batches(more_can_come=bool(readable or self.calls or probes))
            waitables = [*self.calls, *probes, *readable]
            assert waitables, "videos in flight but nothing to wait for"
            ready, _ = ray.wait(waitables, num_returns=1, timeout=self._wait_s())
            start, writer_before = time.perf_counter(), self.stage_seconds["writer"]
            for obj in ready:
                if obj in probes:
                    with contextlib.suppress(ray.exceptions.RayError):  # a dead actor: its calls will say so
                        ray.get(obj)
                    probes[obj].probe_done(obj)
                elif isinstance(obj, ray.ObjectRef):
                    self._on_result(obj, queue)
                else:
                    video = next(v for v in self.active.values() if v.generator is obj)
                    self._on_stream(video, queue)
            writer_s = self.stage_seconds["writer"] - writer_before  # counted as its own stage
            self.stage_seconds["driver"] += time.perf_counter() - start - writer_s
        # The driver process as a whole (its loop, (de)serialisation, the writer thread).
        self.stage_cpu_seconds["driver_process"] = stages.cpu_seconds() - driver_cpu

    # ---- batches --------------------------------------------------------------------------------------------
    def _submit_batches(self, more_can_come: bool) -> None:
        """Send every full batch; a partial one only to an idle actor, once its oldest rows have waited
        ``batch_wait_s`` or when nothing more can arrive (no decode task to read, no call in flight)."""
        now = time.monotonic()
        for kind, filler in self.fillers.items():
            while self.pools[kind].available and (pieces := filler.full_batch()) is not None:
                self._submit_batch(kind, pieces)
            while (
                filler.num_waiting
                and self.pools[kind].has_idle
                and (not more_can_come or now - filler.oldest() >= self.config.stages.batch_wait_s)
            ):
                self._submit_batch(kind, filler.partial_batch())

    def _submit_batch(self, kind: str, pieces: list[Piece]) -> None:
        bounds = [(piece.start, piece.stop) for piece in pieces]
        ref = self.pools[kind].submit(bounds, *[piece.payload for piece in pieces])
        self.calls[ref] = _Call(kind, pieces)

    def _wait_s(self) -> float:
        """How long the loop may block: until the next partial batch is due at an idle actor, at most 5 s."""
        due = [
            filler.oldest() + self.config.stages.batch_wait_s
            for kind, filler in self.fillers.items()
            if filler.num_waiting and self.pools[kind].has_idle
        ]
        return min(5.0, max(0.0, min(due) - time.monotonic())) if due else 5.0

    # ---- hand-overs -----------------------------------------------------------------------------------------
    def _on_stream(self, video: _Video, queue: deque) -> None:
        try:
            ref = next(video.generator)
            if video.expected:
                self._on_payload(video, video.expected.popleft(), ref)
                return
            tag = ray.get(ref)
        except StopIteration:
            tag = {
                "tag": stages.TAG_FAILED,
                "stage": "decode",
                "reason": "error",
                "detail": "decode task ended early",
                "busy_s": 0.0,
                "cpu_s": 0.0,
            }
        except ray.exceptions.RayError as error:
            self._on_error(video, "decode", error, queue)
            return
        if tag["tag"] == stages.TAG_HEADER:
            video.assembly.add_header(tag["header"])
            if tag["header"].needs_asr:
                video.expected.append("asr")
        elif tag["tag"] == stages.TAG_WINDOW:
            window = video.assembly.add_window()
            assert window == tag["index"], (window, tag["index"])
            video.open_windows[window] = max(tag["frames"][k] / self.window_frames[k] for k in MODEL_KINDS)
            video.expected.extend(
                (kind, window, tag["rows"][kind], tag["group"][kind]) for kind in MODEL_KINDS
            )
        else:
            self.stage_seconds["decode"] += tag["busy_s"]
            self.stage_cpu_seconds["decode"] += tag["cpu_s"]
            if tag["tag"] == stages.TAG_END:
                video.decode_done = video.assembly.stream_done = True
                self._maybe_finish(video)
            else:
                self._fail(video, tag["stage"], tag["reason"], tag["detail"])

    def _on_payload(self, video: _Video, what: Any, ref: ray.ObjectRef) -> None:
        """A payload object of the decode task: the waveform goes to ASR, frames wait in a batch filler."""
        if what == "asr":
            self.calls[self.pools["asr"].submit(ref)] = _Call("asr", video=video.key)
            return
        kind, window, rows, group = what
        if rows:
            self.fillers[kind].add((*video.key, window), ref, rows, group)
            return
        video.assembly.set_features(kind, window, np.zeros((0, FEATURE_DIM), np.float16))
        self._on_window_part(video, window)

    def _on_result(self, ref: ray.ObjectRef, queue: deque) -> None:
        call = self.calls.pop(ref)
        stage = f"model_{call.kind}" if call.kind != "asr" else "asr"
        try:
            output = ray.get(ref)
        except ray.exceptions.RayError as error:
            self.pools[call.kind].done(ref, actor_died=_is_worker_death(error))
            held = [self.active[vid] for vid, attempt in call.videos() if self._is_live(vid, attempt)]
            if held:
                logger.warning(
                    "a %s call failed (%s); it held pieces of %d videos: %s",
                    stage,
                    type(error).__name__,
                    len(held),
                    sorted(video.item.video_id for video in held),
                )
            for video in held:
                self._on_error(video, stage, error, queue)
            return
        self.pools[call.kind].done(ref)
        timer = output[1]
        self.stage_seconds[stage] += timer.wall_s
        self.stage_cpu_seconds[stage] += timer.cpu_s
        if call.kind == "asr":
            if self._is_live(*call.video):
                video = self.active[call.video[0]]
                video.assembly.set_captions(output[0])
                self._maybe_finish(video)
            return
        feats, _, num_calls, num_items = output
        self.model_calls[call.kind]["calls"] += num_calls
        self.model_calls[call.kind]["items"] += num_items
        for (video_id, _, window), feats_ND in self.fillers[call.kind].deliver(call.pieces, feats):
            video = self.active[video_id]  # a dropped (abandoned) attempt's pieces are not delivered
            video.assembly.set_features(call.kind, window, feats_ND)
            self._on_window_part(video, window)

    def _is_live(self, video_id: str, attempt: int) -> bool:
        video = self.active.get(video_id)
        return video is not None and video.attempt == attempt

    def _on_window_part(self, video: _Video, window: int) -> None:
        if video.assembly.window_done(window):
            del video.open_windows[window]
            self._maybe_finish(video)

    # ---- outcomes -------------------------------------------------------------------------------------------
    def _abandon(self, video: _Video) -> None:
        """Forget an attempt: its rows still waiting for a batch are dropped (results of calls in flight are
        ignored when they come back) and its decode task is cancelled so it does not hold a CPU slot."""
        del self.active[video.item.video_id]
        for filler in self.fillers.values():
            filler.drop(lambda key, attempt=video.key: key[:2] == attempt)
        if not video.decode_done:
            with contextlib.suppress(ray.exceptions.RayError, ValueError):
                ray.cancel(video.generator)

    def _on_error(self, video: _Video, stage: str, error: Exception, queue: deque) -> None:
        self._abandon(video)
        if _is_worker_death(error) and video.attempt + 1 < self.config.stages.max_attempts:
            logger.warning(
                "re-queuing video %s (attempt %d of %d): %s in %s",
                video.item.video_id,
                video.attempt + 2,
                self.config.stages.max_attempts,
                type(error).__name__,
                stage,
            )
            queue.appendleft((video.item, video.attempt + 1))
            return
        reason = "worker_died" if _is_worker_death(error) else "error"
        lines = str(error).strip().splitlines()
        self._record_failure(video.item, stage, reason, lines[-1] if lines else type(error).__name__)

    def _fail(self, video: _Video, stage: str, reason: str, detail: str) -> None:
        self._abandon(video)
        self._record_failure(video.item, stage, reason, detail)

    def _record_failure(self, item: VideoItem, stage: str, reason: str, detail: str) -> None:
        self.writer.record_failures(
            [
                {
                    "video_id": item.video_id,
                    "source_path": item.video_path,
                    "stage": stage,
                    "reason": reason,
                    "detail": detail,
                }
            ]
        )
        self.failures_by_reason[reason] += 1
        self.progress.update(1)
        self._postfix()

    def _maybe_finish(self, video: _Video) -> None:
        if not video.assembly.complete:
            return
        start = time.perf_counter()
        del self.active[video.item.video_id]
        record = self._record(video)
        self.writer.add(record)
        self.stage_seconds["writer"] += time.perf_counter() - start
        self.num_done += 1
        self.video_seconds += record.duration
        self.progress.update(1)
        self._postfix()

    def _record(self, video: _Video) -> store.VideoRecord:
        features = video.assembly.features(self.tokenizer)
        info, captions = features.info, features.captions
        token_ids = features.caption_token_ids
        if token_ids is None:
            token_ids = [np.zeros(0, np.int32) for _ in captions]
        return store.VideoRecord(
            video_id=video.item.video_id,
            source_path=video.item.video_path,
            duration=info.duration,
            fps=info.fps,
            width=info.display_size[0],
            height=info.display_size[1],
            has_audio=info.has_audio,
            caption_source=features.caption_source,
            extra={
                "video_codec": info.video_codec,
                "audio_codec": info.audio_codec,
                "container": info.container,
            },
            feat_2d=features.feat_2d,
            feat_3d=features.feat_3d,
            logmel=features.logmel,
            caption_start=np.array([c[0] for c in captions], np.float32),
            caption_end=np.array([c[1] for c in captions], np.float32),
            caption_text=[c[2] for c in captions],
            caption_token_ids=list(token_ids),
        )

    def _postfix(self) -> None:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.progress.set_postfix(
            hours=f"{self.video_seconds / 3600:.3f}",
            failed=sum(self.failures_by_reason.values()),
            rate=f"{self.video_seconds / elapsed:.1f} video-s/s",
            **{f"batch_{kind}": mean_items_per_call(counts) for kind, counts in self.model_calls.items()},
            refresh=False,
        )


def mean_items_per_call(counts: dict) -> str:
    """``"12.3/16"``: mean rows per forward pass, out of the batch size."""
    mean = counts["items"] / counts["calls"] if counts["calls"] else 0.0
    return f"{mean:.1f}/{counts['batch']}"


def run_extraction(config: PipelineConfig) -> dict:
    """Extract every input video not yet in STORE into it; returns the summary (also STORE/summary.json).

    Nothing in STORE changes before every input is checked: the input rows (duplicate ids are refused), the
    weights files and word vectors (loaded), the store on disk (read, damage found), the sources of videos the
    store already holds (a different file under a known id is a conflict, not "already done") and, when there
    is work, the Ray cluster (reached). Clean-up is not interrupted: once the store is finished, a Ctrl-C no
    longer undoes the result, and after a first Ctrl-C a second one does not cut it short.
    """
    config.check_paths()
    config = absolute_paths(config)
    job_start = time.perf_counter()
    items, problems = read_inputs(config.input)
    tokenizer = _check_models_and_load_words(config)
    writer = StoreWriter(config.out, extraction_identity(config), config.shards)
    writer.open(commit=False)
    started_ray = False
    try:
        todo, skip = _plan(config, writer, items)
        num_inputs = len(items) + len(problems)
        problems = [p for p in problems if p.video_id not in skip]
        if todo:  # else everything is already in a shard or the failures: no Ray needed
            started_ray = _join_ray(config, todo)
        writer.commit()
        save_config(config, storage.join(config.out, CONFIG))
        writer.sources = {item.video_id: item.source() for item in todo}
        writer.record_failures(
            [
                {
                    "video_id": p.video_id,
                    "source_path": p.source_path,
                    "stage": "input",
                    "reason": p.reason,
                    "detail": p.detail,
                }
                for p in problems
            ]
        )
        summary = {"inputs": num_inputs, "skipped_already_done": num_inputs - len(todo) - len(problems)}
        failures_by_reason = Counter(p.reason for p in problems)
        stage_seconds, stage_cpu_seconds, num_done, video_seconds, startup_s = {}, {}, 0, 0.0, 0.0
        model_calls = no_model_calls(config)
        if todo:
            with tqdm(total=len(todo), unit="video", desc="extract", disable=not config.progress) as progress:
                try:
                    driver = _Driver(config, writer, tokenizer, progress)
                except ray.exceptions.RayActorError as error:
                    raise MCNError(f"the model actors did not start: {_last_line(error)}") from None
                startup_s = time.perf_counter() - job_start
                driver.run(todo)
            writer.flush()
            writer.wait()
            failures_by_reason += driver.failures_by_reason
            stage_seconds = {**driver.stage_seconds, "shard_write": writer.write_seconds}
            stage_cpu_seconds = dict(driver.stage_cpu_seconds)
            num_done, video_seconds = driver.num_done, driver.video_seconds
            model_calls = driver.model_calls
        wall_s = time.perf_counter() - job_start
        summary.update(
            {
                "extracted": num_done,
                "failed": sum(failures_by_reason.values()),
                "failures_by_reason": dict(failures_by_reason),
                "video_seconds": round(video_seconds, 3),
                "wall_seconds": round(wall_s, 3),
                "startup_seconds": round(startup_s, 3),
                "video_seconds_per_wall_second": round(video_seconds / wall_s, 3),
                "stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
                "stage_cpu_seconds": {k: round(v, 3) for k, v in stage_cpu_seconds.items()},
                "model_calls": model_calls,
            }
        )
        return _finish(config, writer, tokenizer, summary)
    finally:
        # Clean-up runs to its end: after a finished store an interrupt must not undo the result (exit 0), after a
        # first Ctrl-C a second one must not cut Ray's shutdown short (Ray then ends the process with status 1).
        with _interrupts_ignored():
            writer.close()
            if started_ray:
                ray.shutdown()


def _finish(config: PipelineConfig, writer: StoreWriter, tokenizer: Any, summary: dict) -> dict:
    """Fold failures, write words.parquet, summary.json and the manifest (last); returns the summary as written."""
    vectors = tokenizer.vectors if tokenizer is not None else None
    writer.finish(vectors, manifest_header(config, writer.identity, vectors), summary)
    return writer.summary


def absolute_paths(config: PipelineConfig) -> PipelineConfig:
    """The config with every file path absolute: the workers of a cluster run in other folders.

    An ffmpeg given as a bare command name stays one (it is looked up on each worker's PATH).
    """

    def absolute(path: str | None) -> str | None:
        return os.path.abspath(path) if path and not storage.is_remote(path) else path

    extract, models = config.extract, config.extract.models
    ffmpeg = extract.decode.ffmpeg
    return dataclasses.replace(
        config,
        input=absolute(config.input),
        out=absolute(config.out),
        extract=dataclasses.replace(
            extract,
            models=dataclasses.replace(
                models, weights_2d=absolute(models.weights_2d), weights_3d=absolute(models.weights_3d)
            ),
            text=dataclasses.replace(extract.text, word_vectors=absolute(extract.text.word_vectors)),
            decode=dataclasses.replace(
                extract.decode, ffmpeg=absolute(ffmpeg) if ffmpeg and os.sep in ffmpeg else ffmpeg
            ),
        ),
        asr=dataclasses.replace(config.asr, model_path=absolute(config.asr.model_path)),
    )


def _check_models_and_load_words(config: PipelineConfig) -> Any:
    """Load the weights files once (safely) and the word vectors, before their fingerprints are recorded;
    returns the caption tokenizer (None without word vectors)."""
    from mcn.extract import visual

    models = config.extract.models
    visual.check_weights(models.model_2d, models.weights_2d)
    visual.check_weights(models.model_3d, models.weights_3d)
    if not config.extract.text.word_vectors:
        return None
    from mcn.extract.extractors import CaptionTokenizer

    return CaptionTokenizer(config.extract.text.word_vectors, config.extract.text.binary)


def _plan(config: PipelineConfig, writer: StoreWriter, items: list[VideoItem]) -> tuple[list, set[str]]:
    """(videos to extract, ids to skip). A video the store holds is skipped only if its source is the same
    file (else the job is refused, listing the conflicts); a failed video is tried again when asked to
    (``retry_failed``) or when its source path changed."""
    sources = writer.source_records()
    conflicts = []
    for item in items:
        if item.video_id in sources:
            problem = source_conflict(item, *sources[item.video_id])
            if problem is not None:
                conflicts.append(f"{item.video_id!r}: {problem}")
    if conflicts:
        shown = "; ".join(conflicts[:MAX_LISTED]) + (
            f"; and {len(conflicts) - MAX_LISTED} more" if len(conflicts) > MAX_LISTED else ""
        )
        raise MCNError(
            f"{len(conflicts)} input videos are not the files {config.out} holds under their ids ({shown}); "
            "nothing was changed: give them new video ids, restore the original files, or use another --out"
        )
    retry = set(writer.failures) if config.retry_failed else set()
    paths = {item.video_id: item.video_path for item in items}
    retry |= {v for v, row in writer.failures.items() if v in paths and row["source_path"] != paths[v]}
    skip = writer.done_ids | (set(writer.failures) - retry)
    return [item for item in items if item.video_id not in skip], skip


def _join_ray(config: PipelineConfig, items: list[VideoItem]) -> bool:
    """:func:`start_ray`, with an unreachable cluster as a one-line error (Ray itself would wait for it)."""
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if address and address not in ("auto", "local"):
        host, _, port = address.split("://")[-1].rpartition(":")
        if host and port.isdigit():
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
            except OSError as error:
                raise MCNError(
                    f"cannot reach the Ray cluster at {address} ({error.strerror or type(error).__name__}); "
                    "check --address (or $RAY_ADDRESS), or leave both unset to run on a local Ray"
                ) from None
    try:
        return start_ray(config, items)
    except ConnectionError as error:
        raise MCNError(
            f"cannot connect to the Ray cluster at {address}: {_last_line(error)}; check --address (or "
            "$RAY_ADDRESS), or leave both unset to run on a local Ray"
        ) from None
    except Exception as error:  # Ray raises a bare Exception when its own processes do not come up
        if address:
            raise
        raise MCNError(f"the local Ray did not start ({_last_line(error)}); rerun the same command") from None


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(error).__name__


@contextlib.contextmanager
def _interrupts_ignored() -> Iterator[None]:
    """Ignore SIGINT inside the block (main thread only; the old handler comes back after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
