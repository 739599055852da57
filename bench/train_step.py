"""Training-step throughput of the MCN model + losses + per-step k-means, on synthetic inputs.

Prints one JSON line per mode (clips/s, seconds per step, peak memory, first-step loss terms) and one for a
full k-means fit. Modes:
  baseline   the reference's recipe: Conv2d audio path, fp16 autocast + GradScaler, Adam (default impl.)
  optimised  same arithmetic: bf16 autocast, audio stem as one matmul + channels_last trunk, TF32, fused Adam,
             plus torch.compile with --compile (falls back to eager if compiling fails)
  optimised-1d   like optimised with the Conv1d trunk instead of channels_last Conv2d

  python bench/train_step.py                      # GPU, reference size (128 videos x 32 clips, D=6144)
  python bench/train_step.py --compile --modes baseline,optimised,optimised-1d
  python bench/train_step.py --device cpu --small # tiny CPU check
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import time

import torch

from mcn.train.kmeans import OnlineKMeans, kmeans_fit
from mcn.train.losses import MCNLoss, fused_embedding
from mcn.train.model import MCNModel, reference

MODES = {
    "baseline": dict(dtype=torch.float16, scaler=True, fused_adam=False, tf32=False, model={}),
    "optimised": dict(
        dtype=torch.bfloat16,
        scaler=False,
        fused_adam=True,
        tf32=True,
        model=dict(audio_stem_matmul=True, audio_channels_last=True),
    ),
    "optimised-1d": dict(
        dtype=torch.bfloat16,
        scaler=False,
        fused_adam=True,
        tf32=True,
        model=dict(audio_conv="1d", audio_stem_matmul=True),
    ),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="8 videos x 4 clips, D=256, 200 frames, K=8")
    parser.add_argument("--modes", default="baseline,optimised")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model in optimised modes")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="also print the top GPU kernels of one step")
    return parser.parse_args()


def sizes(small: bool) -> dict:
    if small:
        return dict(
            videos=8,
            clips=4,
            dim=256,
            frames=200,
            words=20,
            clusters=8,
            queue_steps=2,
            widths=(16, 32, 32, 64),
        )
    return dict(
        videos=128,
        clips=32,
        dim=6144,
        frames=1000,
        words=20,
        clusters=256,
        queue_steps=20,
        widths=(128, 256, 512, 1024),
    )


def synthetic_batch(
    size: dict, word_dim: int, video_dim: int, device: str, seed: int
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = size["videos"] * size["clips"]
    video = torch.randn(n, 2, video_dim // 2, generator=g)
    video = torch.nn.functional.normalize(video, dim=2).reshape(n, video_dim)
    nframes = torch.randint(size["frames"] // 4, size["frames"] + 1, (n,), generator=g)
    audio = torch.randn(n, 40, size["frames"], generator=g) * 10 - 40
    audio = audio * (torch.arange(size["frames"])[None, None, :] < nframes[:, None, None])
    num_words = torch.randint(1, size["words"] + 1, (n,), generator=g)
    text = torch.randn(n, size["words"], word_dim, generator=g) * 0.2
    text = text * (torch.arange(size["words"])[None, :, None] < num_words[:, None, None])
    batch = dict(video=video, audio=audio, nframes=nframes, text=text)
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def run_mode(name: str, args: argparse.Namespace, size: dict) -> dict:
    spec = MODES[name]
    device = args.device
    cuda = device.startswith("cuda")
    torch.backends.cuda.matmul.allow_tf32 = spec["tf32"]
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default for convolutions (the reference ran with it)
    torch.backends.cudnn.benchmark = True
    config = dataclasses.replace(
        reference(), embed_dim=size["dim"], audio_widths=size["widths"], **spec["model"]
    )
    torch.manual_seed(args.seed)
    model = MCNModel(config).to(device).train()
    loss_fn = MCNLoss()
    optimizer = torch.optim.Adam(
        model.parameters(), lr=1e-4, **({"fused": True} if spec["fused_adam"] and cuda else {})
    )
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=spec["scaler"] and cuda)
    kmeans = OnlineKMeans(
        num_clusters=size["clusters"],
        queue_steps=size["queue_steps"],
        clips_per_video=size["clips"],
        queue_clips_per_video=max(1, size["clips"] // 2),
        fit_every=10**9,
    )
    batch = synthetic_batch(size, config.word_dim, config.video_dim, device, args.seed)
    kmeans.centroids = torch.randn(size["clusters"], size["dim"], device=device)
    compiled = "off"
    forward = model
    if args.compile and name != "baseline":
        forward, compiled = torch.compile(model), "on"

    def step() -> dict[str, torch.Tensor]:
        # On CPU autocast is off: bf16 convolutions there are far slower than float32.
        with torch.autocast(device.split(":")[0], dtype=spec["dtype"], enabled=cuda):
            outputs = forward(batch)
            labels = kmeans.step(fused_embedding(outputs))
            terms = loss_fn(outputs, kmeans.centroids, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        return terms

    try:
        first = step()
    except Exception as exc:  # torch.compile can fail on some stacks; measure eager instead
        if compiled != "on":
            raise
        compiled, forward = f"failed: {type(exc).__name__}", model
        first = step()
    first_terms = {k: round(float(v.detach()), 5) for k, v in first.items()}
    for _ in range(args.warmup - 1):
        step()
    if args.profile:
        with torch.profiler.profile() as prof:
            step()
            if cuda:
                torch.cuda.synchronize()
        sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=18, max_name_column_width=60), flush=True)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    clips = size["videos"] * size["clips"]
    result = dict(
        mode=name,
        device=torch.cuda.get_device_name() if cuda else "cpu",
        compile=compiled,
        clips_per_step=clips,
        step_s=round(seconds, 4),
        clips_per_s=round(clips / seconds, 1),
        peak_mem_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        first_step=first_terms,
    )
    return result


def time_kmeans_fit(args: argparse.Namespace, size: dict) -> dict:
    """One 100-iteration fit on a full queue plus a batch (the reference's largest fit)."""
    num_points = (
        size["queue_steps"] * size["videos"] * max(1, size["clips"] // 2) + size["videos"] * size["clips"]
    )
    points = torch.randn(num_points, size["dim"], device=args.device)
    init = points[: size["clusters"]].clone()
    kmeans_fit(points, init, max_iter=2, tol=-1.0)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    _, _, iterations = kmeans_fit(points, init, max_iter=100, tol=-1.0)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return dict(
        mode="kmeans_fit",
        points=num_points,
        dim=size["dim"],
        clusters=size["clusters"],
        iterations=iterations,
        fit_s=round(time.perf_counter() - start, 3),
        tf32=torch.backends.cuda.matmul.allow_tf32,
    )


def main() -> None:
    args = parse_args()
    size = sizes(args.small)
    for name in args.modes.split(","):
        if name not in MODES:
            raise SystemExit(f"unknown mode {name!r}; choose from {sorted(MODES)}")
        print(json.dumps(run_mode(name, args, size)), flush=True)
        gc.collect()  # the previous mode's model and optimizer are gone
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(json.dumps(time_kmeans_fit(args, size)), flush=True)


if __name__ == "__main__":
    main()
