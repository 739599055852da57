"""``mcn extract``: run the Ray feature-extraction job over a folder or manifest into a sharded store."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

DESCRIPTION = (
    "Extract 2D (ResNet-152), 3D (ResNeXt-101), log-mel and caption features from videos into a sharded store, "
    "on a local Ray or a Ray cluster. Rerunning the same command resumes; finished videos are skipped."
)
EPILOG = """\
INPUT is a folder of videos with same-stem sidecar captions (.vtt, .srt, .json, .csv), or a CSV/Parquet
manifest with a video_path column and optional caption_path and video_id columns.

examples:
  mcn extract videos/ --out store/ --weights-2d resnet152-f82ba261.pth --weights-3d resnext-101-kinetics.pth \\
      --word-vectors GoogleNews-vectors-negative300.bin
  mcn extract manifest.csv --out store/ --preset tiny_cpu --word-vectors vectors.txt --asr
  mcn extract videos/ --out store/ --retry-failed          # try the failures table's videos again
  ray job submit --address http://HEAD:8265 -- mcn extract /data/videos --out /data/store ...
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="folder of videos (+ sidecar captions) or a CSV/Parquet manifest")
    parser.add_argument("--out", required=True, help="store folder (created; an existing one is resumed)")
    parser.add_argument(
        "--preset",
        choices=["default", "tiny_cpu"],
        default="default",
        help="starting config: full models (default) or tiny twins on 2 CPUs (tiny_cpu)",
    )
    models = parser.add_argument_group("models and vocabulary")
    models.add_argument("--model-2d", help="registered 2D model name (e.g. resnet152, resnet152-tiny)")
    models.add_argument("--model-3d", help="registered 3D model name (e.g. resnext101, resnext101-tiny)")
    models.add_argument("--weights-2d", help="torchvision ResNet-152 weights (.pth); unset = random init")
    models.add_argument(
        "--download-weights-2d",
        action="store_true",
        help="let torchvision download its ImageNet ResNet-152 weights (needs a network)",
    )
    models.add_argument("--weights-3d", help="resnext-101-kinetics.pth; unset = random init")
    models.add_argument("--word-vectors", help="word2vec .bin or text vectors for caption token ids")
    models.add_argument("--device", help="auto (GPU when present), cpu or cuda[:N]")
    models.add_argument("--batch-2d", type=int, help="frames per 2D forward pass")
    models.add_argument("--batch-3d", type=int, help="16-frame clips per 3D forward pass")
    models.add_argument(
        "--decode-backend",
        choices=["decord", "ffmpeg"],
        help="frame decoder: decord (default) or one ffmpeg process with the reference's fps/scale/crop filters",
    )
    ray_group = parser.add_argument_group("Ray")
    ray_group.add_argument(
        "--address", help="join this Ray cluster (default: $RAY_ADDRESS, else a local Ray)"
    )
    ray_group.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: every core)")
    ray_group.add_argument("--num-gpus", type=int, help="GPUs of the local Ray (default: detected)")
    ray_group.add_argument("--decode-tasks", type=int, help="videos decoding at once (default: one per CPU)")
    ray_group.add_argument("--actors-2d", type=int, help="2D model actors (default: one per GPU, or 1)")
    ray_group.add_argument("--actors-3d", type=int, help="3D model actors (default: one per GPU, or 1)")
    ray_group.add_argument(
        "--windows-in-flight", type=int, help="frame windows queued at the models (memory bound)"
    )
    shards = parser.add_argument_group("store")
    shards.add_argument("--max-videos-per-shard", type=int, help="close a shard after this many videos")
    shards.add_argument("--max-shard-mb", type=int, help="close a shard before it passes this many MB")
    shards.add_argument(
        "--retry-failed", action="store_true", help="extract the failures table's videos again"
    )
    asr = parser.add_argument_group("speech recognition (videos without caption files)")
    asr.add_argument("--asr", action="store_true", help="transcribe videos that have no sidecar captions")
    asr.add_argument(
        "--asr-backend", choices=["faster-whisper", "transformers"], help="default: faster-whisper"
    )
    asr.add_argument(
        "--asr-model", help="local model folder (default: Whisper base assembled from the pip parts)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs and CI)")


def _replace(obj: object, **changes: object) -> object:
    return dataclasses.replace(obj, **{k: v for k, v in changes.items() if v is not None})


def build_config(args: argparse.Namespace):  # -> PipelineConfig
    from mcn.pipeline.config import PRESETS

    config = PRESETS[args.preset](args.input, args.out)
    extract = config.extract
    extract = _replace(
        extract,
        models=_replace(
            extract.models,
            model_2d=args.model_2d,
            model_3d=args.model_3d,
            weights_2d=args.weights_2d,
            weights_3d=args.weights_3d,
            download_2d=args.download_weights_2d or None,
        ),
        runtime=_replace(extract.runtime, device=args.device, batch_2d=args.batch_2d, batch_3d=args.batch_3d),
        text=_replace(extract.text, word_vectors=args.word_vectors),
        decode=_replace(extract.decode, backend=args.decode_backend),
    )
    max_bytes = None if args.max_shard_mb is None else args.max_shard_mb << 20
    return _replace(
        config,
        extract=extract,
        ray=_replace(config.ray, address=args.address, num_cpus=args.num_cpus, num_gpus=args.num_gpus),
        stages=_replace(
            config.stages,
            decode_tasks=args.decode_tasks,
            actors_2d=args.actors_2d,
            actors_3d=args.actors_3d,
            windows_in_flight=args.windows_in_flight,
        ),
        shards=_replace(config.shards, max_videos=args.max_videos_per_shard, max_bytes=max_bytes),
        asr=_replace(
            config.asr, enabled=args.asr or None, backend=args.asr_backend, model_path=args.asr_model
        ),
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    from mcn.pipeline.job import run_extraction

    summary = run_extraction(build_config(args))
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in summary["stage_seconds"].items())
    reasons = ", ".join(f"{k}: {v}" for k, v in summary["failures_by_reason"].items()) or "none"
    print(
        f"extracted {summary['extracted']} videos ({summary['video_seconds'] / 3600:.3f} h) in {summary['wall_seconds']:.1f} s: "
        f"{summary['video_seconds_per_wall_second']:.2f} video-s per wall-s; skipped {summary['skipped_already_done']} "
        f"already done; failed {summary['failed']} ({reasons})\nstage time: {stages}\nstore: {args.out}",
        file=sys.stderr,
    )
    print(json.dumps(summary))
    return 0
