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
step at a time (decoding, frame picking, scaling and colour conversion, copies and pipes, Python).

On a GPU it measures the full-size networks twice: model-only (random device tensors straight into the
network, as the spec's bounds were measured) and through the extractor classes (uint8 numpy frames in,
float16 features out: pinned copies, on-device normalisation, L2 norm, copy back), and prints their ratio and
the percentage of the spec's H200 bounds (ResNet-152 bf16 ~4,400 frames/s at 224x398, ResNeXt-101 TF32 ~2,000
clips/s). Compare figures only between runs on the same card.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import imageio_ffmpeg
import numpy as np
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


def bare_decode_cpu(path: Path) -> float:
    """CPU seconds of a single-thread decode of every video frame, nothing else."""
    return run_cpu([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-threads", "1", "-i", str(path),
                    "-map", "0:v", "-f", "null", "-"])  # fmt: skip


def run_cpu(cmd: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


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


def span(values) -> str:
    """ "a" or "a-b": the range of repeated measurements."""
    values = sorted(values)
    low, high = values[0], values[-1]
    return f"{low:5.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}-{high:.1f}"


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
