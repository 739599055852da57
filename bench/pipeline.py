"""Benchmark of the Ray extraction job on the sample corpus: throughput and where the wall time goes.

    python bench/pipeline.py                      # 12 sample-corpus videos, local Ray with 2 CPUs, tiny models
    python bench/pipeline.py --corpus DIR --num-cpus 8
    python bench/pipeline.py --quick              # 6 videos (what `make bench-cpu` runs)

Prints video-seconds per wall-second for the whole job (Ray start-up included) and for the processing phase
(after the actors are up), each stage's busy seconds and its share of the processing phase's CPU time
(num_cpus x seconds), and what is left: Ray overhead, serialisation, driver and writer. On a CPU machine the
job should be decode/model-bound: decode + model busy shares near 100 %, the rest under 10 %.

Then how full the model calls were (mean items per call next to the batch size, from ``summary.json``), and
each stage's standalone throughput in video-seconds per second, measured after the job on the same machine:
the per-video stream without models in as many processes as the job had decode tasks, and each network on
full synthetic batches (times the job's actors of that network). The job's throughput over the slowest
stage's says how much the pipeline loses to its hand-overs; on a GPU machine that is the figure to watch
(``--preset default --corpus DIR``). On a CPU-only machine the stages share the same cores, so the slowest
stage alone is not a bound the whole job can reach.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path

import numpy as np
import psutil

from mcn.extract.constants import CLIP_FRAMES, RATE_2D_HZ, RATE_3D_HZ
from mcn.pipeline import config as pipeline_config
from mcn.pipeline.inputs import VideoItem, read_inputs
from mcn.pipeline.job import mean_items_per_call, run_extraction


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", help="an existing sample corpus (default: generate one in a temp folder)")
    parser.add_argument(
        "--videos", type=int, default=12, help="videos to generate when --corpus is not given"
    )
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--preset", choices=sorted(pipeline_config.PRESETS), default="tiny_cpu")
    parser.add_argument("--quick", action="store_true", help="6 generated videos: about a minute on 2 CPUs")
    args = parser.parse_args()
    if args.quick:
        args.videos = 6

    with tempfile.TemporaryDirectory(prefix="mcn-bench-") as tmp:
        corpus = Path(args.corpus) if args.corpus else Path(tmp) / "corpus"
        if not args.corpus:
            from mcn.sample.corpus import generate_corpus

            generate_corpus(corpus, num_videos=args.videos, seed=0)
        config = dataclasses.replace(
            pipeline_config.PRESETS[args.preset](), input=str(corpus), out=str(Path(tmp) / "store")
        )
        vectors = corpus / "word2vec.bin"
        text = dataclasses.replace(
            config.extract.text, word_vectors=str(vectors) if vectors.exists() else None
        )
        config = dataclasses.replace(
            config,
            extract=dataclasses.replace(config.extract, text=text),
            ray=dataclasses.replace(config.ray, num_cpus=args.num_cpus),
            progress=False,
        )
        sampler = CpuSampler()
        sampler.start()
        job_start = time.perf_counter()
        try:
            summary = run_extraction(config)
        finally:
            sampler.stop.set()
            sampler.join()
        processing_start = job_start + summary["startup_seconds"]
        report(
            summary, args.num_cpus, sampler.cpu_between(processing_start, job_start + summary["wall_seconds"])
        )
        standalone = standalone_throughput(config, args.num_cpus, min_seconds=3.0 if args.quick else 10.0)
    report_pipeline_efficiency(summary, standalone)


def standalone_throughput(config: pipeline_config.PipelineConfig, num_cpus: int, min_seconds: float) -> dict:
    """Video-seconds per second of each stage on its own: decode (the stream, no models) and each network."""
    import torch

    items, _ = read_inputs(config.input)
    num_decoders = config.stages.decode_tasks or num_cpus
    num_gpus = torch.cuda.device_count() if config.extract.runtime.device != "cpu" else 0
    result = {"decode": (decode_throughput(items, config, num_decoders), f"{num_decoders} processes")}
    for kind, actors in (("2d", config.stages.actors_2d), ("3d", config.stages.actors_3d)):
        actors = actors or max(1, num_gpus)
        per_actor = model_throughput(kind, config, min_seconds)
        result[f"model_{kind}"] = (per_actor * actors, f"{actors} actor{'s' * (actors > 1)}")
    return result


def decode_throughput(
    items: list[VideoItem], config: pipeline_config.PipelineConfig, num_workers: int
) -> float:
    """The per-video stream without models (probe, captions, log-mel, frame windows) over every input video,
    ``num_workers`` videos at once: video-seconds per wall-second."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(num_workers, mp_context=context) as pool:
        list(pool.map(_import_decoding, range(num_workers)))  # start the processes, as the job's warm-up does
        start = time.perf_counter()
        seconds = sum(pool.map(_decode_seconds, items, repeat(config)))
        return seconds / (time.perf_counter() - start)


def _import_decoding(_: int) -> None:
    from mcn.extract import audio, decode, stream, text  # noqa: F401


def _decode_seconds(item: VideoItem, config: pipeline_config.PipelineConfig) -> float:
    import os

    os.environ["OMP_NUM_THREADS"] = str(config.stages.torch_threads)
    from mcn.extract.decode import DecodeError
    from mcn.extract.stream import VideoHeader, VideoStream
    from mcn.extract.text import CaptionError

    duration = 0.0
    try:
        for part in VideoStream(item.video_path, item.caption_path, config.extract.decode):
            if isinstance(part, VideoHeader):
                duration = part.info.duration
    except (DecodeError, CaptionError):
        return 0.0  # the job records these as failures: no video-seconds
    return duration


def model_throughput(kind: str, config: pipeline_config.PipelineConfig, min_seconds: float) -> float:
    """One actor's network on full batches of random frames (2D at 224x398): video-seconds per second."""
    import torch

    from mcn.extract import load_model

    torch.set_num_threads(config.stages.torch_threads)
    model = load_model(kind, config.extract)
    shape = (model.batch_size, 224, 398, 3) if kind == "2d" else (model.batch_size * CLIP_FRAMES, 112, 112, 3)
    frames = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    model.run_batch([frames])  # warm-up: kernel selection, allocations
    num_batches, start = 0, time.perf_counter()
    while num_batches < 3 or time.perf_counter() - start < min_seconds:
        model.run_batch([frames])
        num_batches += 1
    rows_per_s = num_batches * model.batch_size / (time.perf_counter() - start)
    return rows_per_s / RATE_2D_HZ if kind == "2d" else rows_per_s * CLIP_FRAMES / RATE_3D_HZ


def report_pipeline_efficiency(summary: dict, standalone: dict) -> None:
    print("\nmodel calls (mean items per call / batch size):")
    for kind, counts in summary["model_calls"].items():
        fill = counts["items"] / counts["calls"] / counts["batch"] if counts["calls"] else 0.0
        unit = "frames" if kind == "2d" else "clips"
        print(
            f"  {kind}: {mean_items_per_call(counts)} {unit} per call ({100 * fill:.0f} %), {counts['calls']} calls"
        )
    print("\nstandalone throughput (video-s per second):")
    for name, (rate, how) in standalone.items():
        print(f"  {name:<10} {rate:9.1f}  ({how})")
    slowest = min(standalone, key=lambda name: standalone[name][0])
    wall, startup = summary["wall_seconds"], summary["startup_seconds"]
    whole = summary["video_seconds"] / wall
    processing = summary["video_seconds"] / max(wall - startup, 1e-9)
    rate = standalone[slowest][0]
    print(
        f"whole job {whole:.2f} video-s per wall-s = {100 * whole / rate:.0f} % of the slowest stage ({slowest}, "
        f"{rate:.1f}); processing phase {processing:.2f} = {100 * processing / rate:.0f} %"
    )


class CpuSampler(threading.Thread):
    """Samples the CPU seconds of this process and every descendant (the local Ray), grouped by role."""

    def __init__(self, interval_s: float = 0.2):
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.stop = threading.Event()
        self.samples: list[tuple[float, dict[int, tuple[str, float]]]] = []

    @staticmethod
    def role(proc: psutil.Process, me: int, decode_pids: set[int]) -> str:
        title = " ".join(proc.cmdline())
        if proc.pid == me:
            return "driver"
        if title.startswith(("ray::ModelActor", "ray::AsrActor")):
            return "model_actor_processes"
        if title.startswith("ray::"):  # decode_video tasks (and idle workers waiting for one)
            decode_pids.add(proc.pid)
            return "decode_worker_processes"
        if proc.ppid() in decode_pids or "forkserver" in title or proc.name().startswith("ffmpeg"):
            decode_pids.add(proc.pid)
            return "decode_children"  # the decoder's child processes and ffmpeg: decoding work
        return "ray_daemons"  # raylet, GCS, dashboard agents, log monitor

    def run(self) -> None:
        me = psutil.Process()
        decode_pids: set[int] = set()
        while not self.stop.is_set():
            cpu = {}
            for proc in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    cpu[proc.pid] = (self.role(proc, me.pid, decode_pids), times.user + times.system)
            self.samples.append((time.perf_counter(), cpu))
            self.stop.wait(self.interval_s)

    def cpu_between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds per role between two perf_counter times (processes' own time, at sampling resolution)."""
        before = next((cpu for t, cpu in reversed(self.samples) if t <= start), {})
        after: dict[int, tuple[str, float]] = {}
        for t, cpu in self.samples:
            if t <= end:
                after.update(cpu)  # keeps the last value of processes that ended before ``end``
        roles: dict[str, float] = {}
        for pid, (role, value) in after.items():
            roles[role] = roles.get(role, 0.0) + value - before.get(pid, (role, 0.0))[1]
        return roles


def report(summary: dict, num_cpus: int, roles: dict[str, float]) -> None:
    wall, startup = summary["wall_seconds"], summary["startup_seconds"]
    processing = wall - startup
    video_s = summary["video_seconds"]
    print(json.dumps(summary, indent=2))
    print(
        f"\nvideos {summary['extracted']} extracted, {summary['failed']} failed ({summary['failures_by_reason']})"
    )
    print(
        f"video-seconds {video_s:.1f}; wall {wall:.1f} s (start-up {startup:.1f} s, processing {processing:.1f} s)"
    )
    print(
        f"throughput: {video_s / wall:.2f} video-s per wall-s (whole job), {video_s / processing:.2f} (processing)"
    )
    print("\nbusy wall seconds per stage (decode: summed over tasks; driver/writer: in the driver):")
    for name, seconds in summary["stage_seconds"].items():
        print(
            f"  {name:<12} {seconds:8.2f} s  {100 * seconds / processing:6.1f} % of the processing wall time"
        )
    cpu = summary["stage_cpu_seconds"]
    work = {
        "decode (decoder processes, ffmpeg)": roles.get("decode_children", 0.0),
        "decode task (probe, log-mel, captions)": cpu.get("decode", 0.0),
        "models (inside run)": sum(cpu.get(k, 0.0) for k in ("model_2d", "model_3d", "asr")),
    }
    overhead = {
        "Ray daemons (raylet, GCS, agents)": roles.get("ray_daemons", 0.0),
        "decode workers outside the task (serialisation, Ray)": roles.get("decode_worker_processes", 0.0)
        - cpu.get("decode", 0.0),
        "model actors outside run (deserialisation, Ray)": roles.get("model_actor_processes", 0.0)
        - work["models (inside run)"],
        "driver (loop, tags, writer thread)": roles.get("driver", 0.0),
    }
    total = sum(work.values()) + sum(overhead.values())
    print(
        f"\nCPU seconds during processing ({num_cpus} CPUs x {processing:.1f} s = {num_cpus * processing:.1f} available, "
        f"{total:.1f} used):"
    )
    for label, seconds in [*work.items(), *overhead.items()]:
        print(f"  {label:<55} {seconds:7.2f} s  {100 * seconds / total:5.1f} %")
    print(
        f"decode + models: {100 * sum(work.values()) / total:.1f} %; Ray overhead + serialisation + driver + "
        f"writer: {100 * sum(overhead.values()) / total:.1f} % of the CPU the job used"
    )


if __name__ == "__main__":
    main()
