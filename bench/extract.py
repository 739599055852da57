"""Extraction throughput: decoding, 2D frames/s and 3D clips/s, on this CPU and on a GPU when there is one.

    python bench/extract.py --quick            # about 1-2 minutes on a CPU (random weights, small counts)
    python bench/extract.py --video my.mp4     # decode a real file instead of a generated 640x360 clip
    python bench/extract.py --preset medium    # generate the clip with x264's medium preset (default ultrafast)

Decoding is measured for both frame backends (decord, ffmpeg), in process, with one decoder thread: pin the
process to one core (``taskset -c 1``) for the per-core figure of the spec.

On a GPU it measures the full-size networks twice: model-only (random device tensors straight into the
network, as the spec's bounds were measured) and through the extractor classes (uint8 numpy frames in,
float16 features out: pinned copies, on-device normalisation, L2 norm, copy back), and prints their ratio and
the percentage of the spec's H200 bounds (ResNet-152 bf16 ~4,400 frames/s at 224x398, ResNeXt-101 TF32 ~2,000
clips/s). Compare figures only between runs on the same card.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch

from mcn.extract import decode, visual
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


def bench_decode(path: Path, label: str) -> None:
    """Both frame streams from one decode pass, per backend, in process (CPU time includes ffmpeg's)."""
    info = decode.probe(path)
    print(
        f"decode  {label}: {info.duration:.0f} s of {info.width}x{info.height} @ {info.fps:.0f} fps, {info.video_codec}"
    )
    for backend in decode.BACKENDS:
        config = decode.DecodeConfig(backend=backend)
        cpu_start = cpu_seconds()
        start = time.perf_counter()
        num_2d = num_3d = 0
        for window in decode.iter_frame_windows(path, info, config, in_process=True):
            num_2d += len(window.frames_2d_THWC)
            num_3d += len(window.frames_3d_THWC)
        seconds = time.perf_counter() - start
        cpu = cpu_seconds() - cpu_start
        print(f"decode  {backend:<6} {info.duration / seconds:5.1f} video-s/s, {info.duration / cpu:5.1f} video-s per CPU-s "
              f"({num_2d} 2D frames, {num_3d} 3D frames in {seconds:.1f} s)")  # fmt: skip


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (ffmpeg)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


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
    parser.add_argument("--batch-2d", type=int, default=128)
    parser.add_argument("--batch-3d", type=int, default=64)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*random init.*")
    if not args.gpu_only:
        with tempfile.TemporaryDirectory() as tmp:
            if args.video:
                bench_decode(args.video, str(args.video))
            else:
                seconds = 20.0 if args.quick else 60.0
                video = make_test_video(Path(tmp) / "bench.mp4", seconds, args.preset)
                bench_decode(video, f"generated testsrc2 clip, x264 preset {args.preset}")
        bench_cpu(num_frames=2 if args.quick else 8, num_clips=1 if args.quick else 4)
    if torch.cuda.is_available() and not args.cpu_only:
        bench_gpu(args.batch_2d, args.batch_3d, num_batches=4 if args.quick else 16)
    elif not args.cpu_only:
        print("gpu     none visible: GPU figures skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
