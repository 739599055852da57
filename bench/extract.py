"""Extraction throughput: decoding, 2D frames/s and 3D clips/s, on this CPU and on a GPU when there is one.

    python bench/extract.py --quick                   # about 1-2 minutes on a CPU (random weights, small counts)
    taskset -c 1 python bench/extract.py --video my.mp4 --cpu-only --repeats 3
                                                      # decode a real file on one core, three times
    taskset -c 1 python bench/extract.py --video my.mp4 --profile --cpu-only
                                                      # and where the decoding CPU time goes, step by step
    python bench/extract.py --preset medium           # generate the clip with x264's medium preset

Decoding is measured per backend as the job decodes: the decord backend in its child process, the ffmpeg
backend's ffmpeg process, both with one decoder thread and the default settings (plus the ffmpeg backend's fast
kernel). Each repeat also runs a bare decode of the same file (``ffmpeg -threads 1 -i F -map 0:v -f null -``,
the floor: every frame must be decoded for the 24 fps stream) and prints, per backend, video-seconds per
wall-second, video-seconds per CPU-second (this process and the decoder processes it started) and the ratio of
that to the bare decode's. CPU seconds hold up when other work shares the machine; pin to one core
(``taskset -c 1``: child processes inherit it) for the per-core figure.

``--profile`` adds the ablation of docs/extraction.md: the CPU seconds of each backend's pipeline built up one
step at a time (decoding, frame picking, scaling and colour conversion, copies and pipes, Python), then the same
runs split by thread (Linux ``/proc``): ffmpeg's decoder thread against its filter-graph thread, and decord's
own decoding thread against the Python thread that places the frames. A split within one run holds up better
than a difference between two runs on a machine whose CPU seconds move between runs.

On a GPU it measures the full-size networks twice: model-only (random device tensors straight into the
network, as the spec's bounds were measured) and through the extractor classes (uint8 numpy frames in,
float16 features out: pinned copies, on-device normalisation, L2 norm, copy back), and prints their ratio and
the percentage of the spec's H200 bounds (ResNet-152 bf16 ~4,400 frames/s at 224x398, ResNeXt-101 TF32 ~2,000
clips/s). Compare figures only between runs on the same card.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import psutil
import torch

from mcn.extract import decode, decode_ffmpeg, decode_worker, visual
from mcn.extract.extractors import Clip3DExtractor, Frame2DExtractor

BOUND_2D_FRAMES_S = 4400.0  # ResNet-152, bf16 + channels_last, 224x398, one H200
BOUND_3D_CLIPS_S = 2000.0  # ResNeXt-101 3D, TF32, 16x112x112, one H200
FRAME_2D = (224, 398)  # a 16:9 frame with the shorter side at 224


def make_test_video(path: Path, seconds: float, preset: str = "ultrafast") -> Path:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
           f"testsrc2=size=640x360:rate=30:duration={seconds}", "-c:v", "libx264", "-preset", preset,
           "-pix_fmt", "yuv420p", str(path)]  # fmt: skip
    subprocess.run(cmd, check=True)
    return path


DECODE_RUNS = {  # label: the decode settings of a job
    "decord": decode.DecodeConfig(backend="decord"),
    "ffmpeg": decode.DecodeConfig(backend="ffmpeg"),
    "ffmpeg, fast kernel": decode.DecodeConfig(backend="ffmpeg", kernel="fast"),
}


def bare_decode_cmd(path: Path) -> list[str]:
    """A single-thread decode of every video frame, nothing else."""
    return [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-threads", "1", "-i", str(path),
            "-map", "0:v", "-f", "null", "-"]  # fmt: skip


def bare_decode_cpu(path: Path) -> float:
    """CPU seconds of :func:`bare_decode_cmd`."""
    return run_cpu(bare_decode_cmd(path))


def run_cpu(cmd: list[str]) -> float:
    start = children_cpu_seconds()
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    return children_cpu_seconds() - start


def decode_cpu(path: Path, info: decode.VideoInfo, config: decode.DecodeConfig, in_process: bool = False):
    """(wall s, CPU s, 2D frames, 3D frames) of one pass over both frame streams."""
    usage = decode.DecoderUsage()
    start_cpu, start = own_cpu_seconds(), time.perf_counter()
    num_2d = num_3d = 0
    for window in decode.iter_frame_windows(path, info, config, in_process=in_process, usage=usage):
        num_2d += len(window.frames_2d_THWC)
        num_3d += len(window.frames_3d_THWC)
    return time.perf_counter() - start, own_cpu_seconds() - start_cpu + usage.cpu_s, num_2d, num_3d


def own_cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def children_cpu_seconds() -> float:
    """CPU seconds of the child processes this process has waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


def bench_decode(path: Path, label: str, repeats: int) -> None:
    """Both frame streams from one decode pass, per backend, as a job decodes, against a bare decode."""
    info = decode.probe(path)
    print(f"decode  {label}: {info.duration:.1f} s of {info.width}x{info.height} @ {info.fps:.2f} fps, "
          f"{info.video_codec}, {repeats} repeat(s)")  # fmt: skip
    decode_cpu(path, info, DECODE_RUNS["decord"])  # start the decoding fork server, as a job's warm-up does
    bare, runs = [], {name: [] for name in DECODE_RUNS}
    for _ in range(repeats):
        bare.append(bare_decode_cpu(path))
        for name, config in DECODE_RUNS.items():
            runs[name].append(decode_cpu(path, info, config))
    print(
        f"decode  bare decode (ffmpeg -threads 1 ... -f null): {span(info.duration / c for c in bare)} "
        "video-s per CPU-s"
    )
    for name, results in runs.items():
        walls, cpus = [r[0] for r in results], [r[1] for r in results]
        ratios = [b / c for b, c in zip(bare, cpus)]  # each against the bare decode run next to it
        print(f"decode  {name:<20} {span(info.duration / w for w in walls)} video-s/s, "
              f"{span(info.duration / c for c in cpus)} video-s per CPU-s, "
              f"{span(100 * r for r in ratios)} % of the bare decode "
              f"({results[0][2]} 2D + {results[0][3]} 3D frames)")  # fmt: skip


def span(values, digits: int = 1, width: int = 5) -> str:
    """ "a" (padded to ``width``) or "a-b": the range of repeated measurements."""
    values = sorted(values)
    low, high = f"{values[0]:.{digits}f}", f"{values[-1]:.{digits}f}"
    return f"{low:>{width}}" if low == high else f"{low}-{high}"


def profile_decode(path: Path, repeats: int) -> None:
    """CPU seconds of each backend's pipeline built up step by step (min over repeats): where the time goes."""
    info = decode.probe(path)
    width, height = info.display_size
    config = decode.DecodeConfig()
    fast = decode.DecodeConfig(backend="ffmpeg", kernel="fast")
    graph, _ = decode_ffmpeg.filter_graph(info, config)
    fast_graph, _ = decode_ffmpeg.filter_graph(info, fast)
    ffmpeg = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-filter_complex_threads", "1",
              "-threads", "1", "-i", str(path), "-filter_complex"]  # fmt: skip
    two_outputs = ["-map", "[o1]", "-f", "rawvideo", "-pix_fmt", "rgb24", "-y", os.devnull,
                   "-map", "[o2]", "-f", "rawvideo", "-pix_fmt", "rgb24", "-y", os.devnull]  # fmt: skip
    # the same scaling without the colour conversion: the scalers write yuv420p (crop offsets become even)
    yuv_outputs = [arg if arg != "rgb24" else "yuv420p" for arg in two_outputs]
    # what the backend asks for: planar RGB (gbrp) where the scaled width is odd, the same frames for less
    formats = iter(decode_ffmpeg.output_formats(info, config))
    own_outputs = [next(formats) if arg == "rgb24" else arg for arg in two_outputs]
    picking = f"[0:v:0]split=2[a][b];[a]fps={config.rate_2d:g}[o1];[b]fps={config.rate_3d:g}[o2]"
    size_2d = decode.output_size_2d(width, height, config.size_2d)
    steps = {
        "ffmpeg": [
            ("decode (bare, -f null)", lambda: bare_decode_cpu(path)),
            ("+ split, fps filters", lambda: run_cpu([*ffmpeg, picking, "-map", "[o1]", "-f", "null", "-",
                                                      "-map", "[o2]", "-f", "null", "-"])),  # fmt: skip
            ("+ scale (bicubic) + crop, yuv420p, to /dev/null", lambda: run_cpu([*ffmpeg, graph, *yuv_outputs])),
            ("+ rgb24 in the scaler (the reference), to /dev/null", lambda: run_cpu([*ffmpeg, graph, *two_outputs])),
            ("  or gbrp at odd widths (the backend), to /dev/null", lambda: run_cpu([*ffmpeg, graph, *own_outputs])),
            ("+ pipes, reader threads, interleaving (the backend)", lambda: decode_cpu(path, info, decode.DecodeConfig(backend="ffmpeg"))[1]),
        ],
        "ffmpeg, fast kernel": [
            ("crop + scale (area) + rgb24 last, to /dev/null", lambda: run_cpu([*ffmpeg, fast_graph, *two_outputs])),
            ("+ pipes, reader threads (the backend)", lambda: decode_cpu(path, info, fast)[1]),
        ],
        "decord": [
            ("decode (decord, every frame to 32x18 RGB)", lambda: decord_read_all(path, (32, 18))),
            (f"+ RGB at {size_2d[0]}x{size_2d[1]} of the frames used", lambda: decord_read_all(path, size_2d, config)),
            ("+ frame placing, 3D block means (in process)", lambda: decode_cpu(path, info, config, in_process=True)[1]),
            ("+ child process, pipe (the backend)", lambda: decode_cpu(path, info, config)[1]),
        ],
    }  # fmt: skip
    print(f"profile {path}: CPU seconds for {info.duration:.1f} video-seconds, min of {repeats}")
    for backend, backend_steps in steps.items():
        previous = None
        for name, step in backend_steps:
            seconds = min(step() for _ in range(repeats))
            delta = "" if previous is None else f"  ({seconds - previous:+.2f} s)"
            print(
                f"profile {backend:<20} {name:<52} {seconds:6.2f} s  {info.duration / seconds:5.1f} video-s per CPU-s{delta}"
            )
            previous = seconds
    profile_threads(
        path,
        info,
        {"bare decode": bare_decode_cmd(path), "ffmpeg backend graph": [*ffmpeg, graph, *own_outputs]},
        repeats,
    )


THREAD_SAMPLE_S = 0.02  # how often /proc is read while a profiled run works


class ThreadCPU:
    """CPU seconds of each thread of process ``pid`` while a run works: ``/proc/PID/task`` read every
    ``THREAD_SAMPLE_S`` by a sampler thread (its own thread is left out, its CPU seconds kept in ``own_cpu_s``),
    the last reading of each thread kept, less what a thread had used before the run. ``pid`` may be a function
    that finds the process once it has started (None until then).

    A thread's last ``THREAD_SAMPLE_S`` before it exits can be missed; :meth:`groups` puts what the process's
    total (given by the caller) has beyond the sampled threads under ``"unsampled"``.
    """

    def __init__(self, pid: int | Callable[[], int | None]) -> None:
        self.pid = pid
        self.own_cpu_s = 0.0
        self.seen: dict[int, tuple[str, float]] = {}
        self.baseline: dict[int, float] = {}
        self.stop = threading.Event()
        self.sampler = threading.Thread(target=self._run, daemon=True)
        self.tick = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> ThreadCPU:
        self.sample()
        self.baseline = {tid: seconds for tid, (_, seconds) in self.seen.items()}  # threads already running
        self.sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.sampler.join()

    def _run(self) -> None:
        own = threading.get_native_id()
        while True:
            self.sample(skip=own)
            if self.stop.wait(THREAD_SAMPLE_S):
                self.own_cpu_s = time.thread_time()
                return

    def sample(self, skip: int = -1) -> None:
        pid = self.pid if isinstance(self.pid, int) else self.pid()
        if pid is None:
            return
        with contextlib.suppress(OSError):
            for task in os.scandir(f"/proc/{pid}/task"):
                tid = int(task.name)
                if tid == skip:
                    continue
                with contextlib.suppress(OSError, ValueError, IndexError):
                    comm = Path(task.path, "comm").read_text().strip()
                    fields = Path(task.path, "stat").read_text().rpartition(")")[2].split()
                    self.seen[tid] = (comm, (int(fields[11]) + int(fields[12])) / self.tick)  # utime, stime

    def groups(self, group_of, total_s: float | None = None) -> dict[str, float]:
        """CPU seconds per ``group_of(tid, thread name)``, plus "unsampled" when ``total_s`` is given."""
        sums: dict[str, float] = {}
        for tid, (comm, seconds) in self.seen.items():
            group = group_of(tid, comm)
            sums[group] = sums.get(group, 0.0) + seconds - self.baseline.get(tid, 0.0)
        if total_s is not None:
            sums["unsampled"] = max(0.0, total_s - sum(sums.values()))
        return sums


def ffmpeg_thread_group(tid: int, name: str) -> str:
    """ffmpeg (7 and later) names its threads: dec0:0:h264, fc0 / vf#0:0 (filters), enc / mux, dmx."""
    for prefix, group in (("dec", "decoder"), ("fc", "filters"), ("vf", "filters")):
        if name.startswith(prefix):
            return group
    return "other"


def ffmpeg_threads(cmd: list[str]) -> dict[str, float]:
    """CPU seconds per thread group of one ffmpeg run (see :func:`ffmpeg_thread_group`)."""
    start = children_cpu_seconds()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    with ThreadCPU(proc.pid) as threads:
        returncode = proc.wait()
    if returncode != 0:
        raise subprocess.CalledProcessError(returncode, cmd)
    return threads.groups(ffmpeg_thread_group, children_cpu_seconds() - start)


def ffmpeg_backend_threads(path: Path, info: decode.VideoInfo) -> dict[str, float]:
    """CPU seconds of the ffmpeg backend as a job runs it: ffmpeg's threads, and this process (the reader
    threads filling the windows, the interleaving; the sampler's own CPU left out)."""
    me, found = psutil.Process(), []

    def ffmpeg_child() -> int | None:
        if not found:
            with contextlib.suppress(psutil.Error):
                found.extend(c.pid for c in me.children() if c.name().startswith("ffmpeg"))
        return found[0] if found else None

    usage = decode.DecoderUsage()
    start = own_cpu_seconds()
    with ThreadCPU(ffmpeg_child) as threads:
        for _ in decode.iter_frame_windows(path, info, decode.DecodeConfig(backend="ffmpeg"), usage=usage):
            pass
    groups = threads.groups(ffmpeg_thread_group, usage.cpu_s)
    groups["this process"] = own_cpu_seconds() - start - threads.own_cpu_s
    return groups


def decord_threads(path: Path, info: decode.VideoInfo, config: decode.DecodeConfig) -> dict[str, float]:
    """CPU seconds of the decord backend in this process: decord's decoding thread(s) (decode, scaling, colour
    conversion) and the main thread (frame placing, block means, Python)."""
    main = threading.get_native_id()
    with ThreadCPU(os.getpid()) as threads:
        for _ in decode.iter_frame_windows(path, info, config, in_process=True):
            threads.sample(skip=threads.sampler.native_id)  # decord's thread ends with the last window
    return threads.groups(lambda tid, name: "main (Python)" if tid == main else "decord")


def profile_threads(path: Path, info: decode.VideoInfo, commands: dict[str, list[str]], repeats: int) -> None:
    """The thread split of the bare decode, of the backend's ffmpeg graph (``commands``), of the ffmpeg backend
    as a job runs it and of decord in process, run in turn ``repeats`` times; ratios are taken within a run, or
    between the runs of one turn."""
    print(f"profile threads: CPU seconds per thread (/proc read every {THREAD_SAMPLE_S * 1000:.0f} ms), "
          f"{repeats} run(s) each, ranges")  # fmt: skip
    labels = [*commands, "ffmpeg backend (job)", "decord, in process"]
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
    for _ in range(repeats):
        for label, cmd in commands.items():
            runs[label].append(ffmpeg_threads(cmd))
        runs["ffmpeg backend (job)"].append(ffmpeg_backend_threads(path, info))
        runs["decord, in process"].append(decord_threads(path, info, decode.DecodeConfig()))
    bare = [sum(r.values()) for r in runs["bare decode"]]
    for label, results in runs.items():
        groups = sorted({g for r in results for g in r}, key=lambda g: -results[0].get(g, 0.0))
        parts = [f"{g} {span((r.get(g, 0.0) for r in results), 2, width=0)} s" for g in groups]
        if "filters" in groups and label != "bare decode":
            parts.append(f"filters/decoder {ratio_span(results, 'filters', 'decoder')}")
        if "decoder" in groups:  # the bare decode's work, measured inside the run itself
            shares = [{"decoder": 100 * r["decoder"], "all": sum(r.values())} for r in results]
            parts.append(f"decoder/all {ratio_span(shares, 'decoder', 'all', 1)} %")
        if "decord" in groups:
            parts.append(f"main/decord {ratio_span(results, 'main (Python)', 'decord')}")
            totals = [{"bare": 100 * b, "decord": r["decord"]} for b, r in zip(bare, results)]
            parts.append(f"the bare decode / decord's thread {ratio_span(totals, 'bare', 'decord', 1)} %")
        print(f"profile threads {label:<20} " + ", ".join(parts))


def ratio_span(results: list[dict[str, float]], top: str, bottom: str, digits: int = 2) -> str:
    """The range of ``top / bottom`` over runs, "-" when no run used the ``bottom`` threads measurably (a very
    short clip: /proc counts in clock ticks)."""
    ratios = [r.get(top, 0.0) / r[bottom] for r in results if r.get(bottom, 0.0) > 0]
    return span(ratios, digits, width=0) if ratios else "-"


def decord_read_all(path: Path, size: tuple[int, int], config: decode.DecodeConfig | None = None) -> float:
    """CPU seconds of decord converting every frame (or, given ``config``, the frames its streams use) to RGB at
    ``size`` (width, height)."""
    import decord

    start = own_cpu_seconds()
    reader = decord.VideoReader(str(path), width=size[0], height=size[1], num_threads=1)
    indices = np.arange(len(reader))
    if config is not None:
        times = reader.get_frame_timestamp(indices)
        starts, end = times[:, 0] - times[0, 0], float(times[-1, 1] - times[0, 0])
        picks = [decode_worker.pick_frames(starts, end, rate) for rate in (config.rate_2d, config.rate_3d)]
        indices = np.unique(np.concatenate(picks))
    for first in range(0, len(indices), decode_worker.CHUNK_FRAMES):
        reader.get_batch(indices[first : first + decode_worker.CHUNK_FRAMES].tolist())
    return own_cpu_seconds() - start


def kernel_difference(folder: Path, weights_3d: str | None) -> None:
    """Max abs difference of L2-normalised 3D features, fast vs reference kernel (ffmpeg backend), per video of
    ``folder`` (e.g. a sample corpus). Only the 3D frames differ between the kernels."""
    extractor = Clip3DExtractor("resnext101", weights_3d, device="cpu", batch_size=8)
    worst = 0.0
    for path in sorted(p for p in folder.rglob("*") if p.suffix in (".mp4", ".webm", ".mkv")):
        try:
            info = decode.probe(path)
        except decode.DecodeError as error:
            print(f"kernels {path.name}: skipped ({error.reason})")
            continue
        features = []
        for kernel in ("reference", "fast"):
            config = decode.DecodeConfig(backend="ffmpeg", kernel=kernel)
            frames = np.concatenate([w.frames_3d_THWC for w in decode.iter_frame_windows(path, info, config)])
            features.append(extractor([frames]).only().astype(np.float32))
        reference, fast = features
        difference = float(np.abs(fast - reference).max())
        cosine = float(np.min(np.sum(fast * reference, axis=1)))
        pixels = "x".join(map(str, info.display_size))
        print(f"kernels {path.name} ({pixels}, {len(reference)} clips): max |fast - reference| {difference:.4f}, "
              f"lowest cosine {cosine:.4f}")  # fmt: skip
        worst = max(worst, difference)
    print(
        f"kernels max abs difference of L2-normalised 3D features over the folder: {worst:.4f} "
        f"({'random-init' if weights_3d is None else weights_3d} ResNeXt-101)"
    )


def timed(fn, repeats: int, sync: bool) -> float:
    """Seconds per call after one warm-up call."""
    fn()
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if sync:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def random_frames(num: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (num, height, width, 3), dtype=np.uint8)


def bench_cpu(num_frames: int, num_clips: int) -> None:
    frames_2d = random_frames(num_frames, *FRAME_2D)
    frames_3d = random_frames(num_clips * 16, 112, 112)
    extractor_2d = Frame2DExtractor("resnet152", device="cpu", batch_size=num_frames)
    per_call = timed(lambda: extractor_2d([frames_2d]).only(), 1, sync=False)
    print(f"cpu 2D  ResNet-152 fp32 {FRAME_2D[0]}x{FRAME_2D[1]}: {num_frames / per_call:.2f} frames/s")
    extractor_3d = Clip3DExtractor("resnext101", device="cpu", batch_size=num_clips)
    per_call = timed(lambda: extractor_3d([frames_3d]).only(), 1, sync=False)
    print(f"cpu 3D  ResNeXt-101 fp32 16x112x112: {num_clips / per_call:.2f} clips/s")


def model_only(name: str, inputs: torch.Tensor, dtype: torch.dtype, channels_last: bool, fuse: bool) -> float:
    """Items per second of the bare network on device tensors."""
    model = visual.build_model(name)
    if fuse:
        model = visual.fuse_batchnorm(model)
    model = model.to("cuda", dtype).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    inputs = inputs.to(dtype)
    with torch.inference_mode():
        per_call = timed(lambda: model(inputs), 10, sync=True)
    return len(inputs) / per_call


def bench_gpu(batch_2d: int, batch_3d: int, num_batches: int) -> None:
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    print(f"gpu     {torch.cuda.get_device_name()}")
    images = torch.randn(batch_2d, 3, *FRAME_2D, device="cuda")
    clips = torch.randn(batch_3d, 3, 16, 112, 112, device="cuda")
    runs_2d = {
        "fp32": model_only("resnet152", images, torch.float32, False, False),
        "bf16+cl": model_only("resnet152", images, torch.bfloat16, True, False),
        "bf16+cl+fused-bn": model_only("resnet152", images, torch.bfloat16, True, True),
    }
    runs_3d = {
        "tf32": model_only("resnext101", clips, torch.float32, False, False),
        "tf32+fused-bn": model_only("resnext101", clips, torch.float32, False, True),
        "bf16+fused-bn": model_only("resnext101", clips, torch.bfloat16, False, True),
    }
    for label, rate in runs_2d.items():
        print(
            f"gpu 2D  model-only {label:<18} batch {batch_2d}: {rate:7.0f} frames/s ({rate / BOUND_2D_FRAMES_S:4.0%} of bound)"
        )
    for label, rate in runs_3d.items():
        print(
            f"gpu 3D  model-only {label:<18} batch {batch_3d}: {rate:7.0f} clips/s  ({rate / BOUND_3D_CLIPS_S:4.0%} of bound)"
        )

    extractor_2d = Frame2DExtractor("resnet152", device="cuda", batch_size=batch_2d, precision="bf16")
    frames_2d = random_frames(batch_2d * num_batches, *FRAME_2D)
    rate = len(frames_2d) / timed(lambda: extractor_2d([frames_2d]).only(), 2, sync=True)
    print(f"gpu 2D  extractor bf16+cl uint8 -> fp16:          {rate:7.0f} frames/s ({rate / BOUND_2D_FRAMES_S:4.0%} of bound, "
          f"{rate / runs_2d['bf16+cl']:.2f} of model-only)")  # fmt: skip
    extractor_3d = Clip3DExtractor("resnext101", device="cuda", batch_size=batch_3d, precision="tf32")
    frames_3d = random_frames(batch_3d * num_batches * 16, 112, 112)
    rate = batch_3d * num_batches / timed(lambda: extractor_3d([frames_3d]).only(), 2, sync=True)
    print(f"gpu 3D  extractor tf32+fused-bn uint8 -> fp16:    {rate:7.0f} clips/s  ({rate / BOUND_3D_CLIPS_S:4.0%} of bound, "
          f"{rate / runs_3d['tf32+fused-bn']:.2f} of model-only)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts: about 1-2 minutes on a CPU")
    parser.add_argument(
        "--video", type=Path, help="video to decode (default: a generated 640x360 30 fps clip)"
    )
    parser.add_argument(
        "--cpu-only", action="store_true", help="skip the GPU part even when a GPU is present"
    )
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU part")
    parser.add_argument(
        "--preset",
        default="ultrafast",
        help="x264 preset of the generated clip (default ultrafast; e.g. medium, x264's own default)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="decode measurements per backend (ranges printed)"
    )
    parser.add_argument("--profile", action="store_true", help="also show where the decoding CPU time goes")
    parser.add_argument(
        "--kernel-difference",
        type=Path,
        metavar="FOLDER",
        help="compare 3D features of the fast and reference kernels on the videos of FOLDER, then stop",
    )
    parser.add_argument(
        "--weights-3d", help="ResNeXt-101 weights for --kernel-difference (default: random init)"
    )
    parser.add_argument("--batch-2d", type=int, default=128)
    parser.add_argument("--batch-3d", type=int, default=64)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*random init.*")
    if args.kernel_difference:
        kernel_difference(args.kernel_difference, args.weights_3d)
        return 0
    if not args.gpu_only:
        with tempfile.TemporaryDirectory() as tmp:
            if args.video:
                video, label = args.video, str(args.video)
            else:
                seconds = 20.0 if args.quick else 60.0
                video = make_test_video(Path(tmp) / "bench.mp4", seconds, args.preset)
                label = f"generated testsrc2 clip, x264 preset {args.preset}"
            bench_decode(video, label, args.repeats)
            if args.profile:
                profile_decode(video, args.repeats)
        bench_cpu(num_frames=2 if args.quick else 8, num_clips=1 if args.quick else 4)
    if torch.cuda.is_available() and not args.cpu_only:
        bench_gpu(args.batch_2d, args.batch_3d, num_batches=4 if args.quick else 16)
    elif not args.cpu_only:
        print("gpu     none visible: GPU figures skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
