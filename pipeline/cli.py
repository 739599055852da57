"""``mcn extract``: run the Ray feature-extraction job over a folder or manifest into a sharded store."""

from __future__ import annotations

import argparse
import json
import sys

from mcn import options

DESCRIPTION = (
    "Extract 2D (ResNet-152), 3D (ResNeXt-101), log-mel and caption features from videos into a sharded store, "
    "on a local Ray or a Ray cluster. Rerunning the same command resumes; finished videos are skipped."
)
EPILOG = """\
INPUT is a folder of videos with same-stem sidecar captions (.vtt, .srt, .json, .csv), or a CSV/Parquet
manifest with a video_path column and optional caption_path and video_id columns. INPUT, the paths in a
manifest and --out may be object-store URLs (s3://bucket/prefix; the standard AWS_* variables configure it).

examples:
  mcn extract videos/ --out store/ --weights-2d resnet152-f82ba261.pth --weights-3d resnext-101-kinetics.pth \\
      --word-vectors GoogleNews-vectors-negative300.bin
  mcn extract manifest.csv --out store/ --preset tiny_cpu --word-vectors vectors.txt --asr
  mcn extract videos/ --out store/ --set stages.decode_lookahead=3 --set extract.decode.timeout_s=600
  mcn extract videos/ --out store/ --retry-failed          # try the failures table's videos again
  ray job submit --address http://HEAD:8265 -- mcn extract /data/videos --out /data/store ...
  mcn extract s3://bucket/videos --out s3://bucket/store --preset tiny_cpu   # a bucket in, a bucket out
"""


BINDINGS = {
    options.OUT.described("store folder or s3:// prefix (created; an existing store is resumed)"): "out",
    options.MODEL_2D: "extract.models.model_2d",
    options.MODEL_3D: "extract.models.model_3d",
    options.WEIGHTS_2D: "extract.models.weights_2d",
    options.WEIGHTS_3D: "extract.models.weights_3d",
    options.DOWNLOAD_WEIGHTS_2D: "extract.models.download_2d",
    options.WORD_VECTORS: "extract.text.word_vectors",
    options.DEVICE: "extract.runtime.device",
    options.BATCH_2D: "extract.runtime.batch_2d",
    options.BATCH_3D: "extract.runtime.batch_3d",
    options.DECODE_BACKEND: "extract.decode.backend",
    options.ADDRESS: "ray.address",
    options.NUM_CPUS: "ray.num_cpus",
    options.NUM_GPUS: "ray.num_gpus",
    options.Flag(
        "--decode-tasks", "videos decoding at once (default: one per CPU)", "N"
    ): "stages.decode_tasks",
    options.Flag("--actors-2d", "2D model actors (default: one per GPU, or 1)", "N"): "stages.actors_2d",
    options.Flag("--actors-3d", "3D model actors (default: one per GPU, or 1)", "N"): "stages.actors_3d",
    options.Flag(
        "--windows-in-flight", "frame windows queued at the models (memory bound)", "N"
    ): "stages.windows_in_flight",
    options.Flag("--max-videos-per-shard", "close a shard after this many videos", "N"): "shards.max_videos",
    options.Flag("--max-shard-mb", "close a shard before it passes this many MB", "MB"): (
        "shards.max_bytes",
        options.megabytes,
    ),
    options.Flag("--retry-failed", "extract the failures table's videos again", switch=True): "retry_failed",
    options.Flag("--asr", "transcribe videos that have no sidecar captions", switch=True): "asr.enabled",
    options.Flag(
        "--asr-backend",
        "faster-whisper (default) or transformers",
        choices=("faster-whisper", "transformers"),
    ): "asr.backend",
    options.Flag(
        "--asr-model", "local model folder (default: Whisper base assembled from the pip parts)", "DIR"
    ): "asr.model_path",
    options.NO_PROGRESS: "progress",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mcn.pipeline.config import PRESETS

    parser.add_argument(
        "input", help="folder or bucket prefix of videos (+ sidecar captions), or a CSV/Parquet manifest"
    )
    options.add_preset_and_set(parser, PRESETS, "default")
    options.add_flags(parser, BINDINGS, required=(options.OUT,))


def build_config(args: argparse.Namespace):  # -> PipelineConfig
    from mcn.pipeline.config import PRESETS

    return options.build_config(PRESETS, args, BINDINGS, fixed={"input": args.input})


def run(args: argparse.Namespace) -> int:
    from mcn.pipeline.job import mean_items_per_call, run_extraction

    config = build_config(args)
    summary = run_extraction(config)
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in summary["stage_seconds"].items())
    calls = ", ".join(
        f"{kind} {mean_items_per_call(counts)} {'frames' if kind == '2d' else 'clips'} in {counts['calls']} calls"
        for kind, counts in summary["model_calls"].items()
    )
    reasons = ", ".join(f"{k}: {v}" for k, v in summary["failures_by_reason"].items()) or "none"
    print(
        f"extracted {summary['extracted']} videos ({summary['video_seconds'] / 3600:.3f} h) in {summary['wall_seconds']:.1f} s: "
        f"{summary['video_seconds_per_wall_second']:.2f} video-s per wall-s; skipped {summary['skipped_already_done']} "
        f"already done; failed {summary['failed']} ({reasons})\nstage time: {stages}\n"
        f"items per model call (mean/batch): {calls}\nstore: {config.out}",
        file=sys.stderr,
    )
    print(json.dumps(summary))
    return 0
