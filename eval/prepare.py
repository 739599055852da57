"""The evaluation side of ``mcn eval prepare``: official annotations + a folder of videos -> a benchmark definition
and an extraction manifest.

The adapter named by the config (:mod:`mcn.eval.adapters`) converts the official files into a definition that
carries the benchmark's settings (:mod:`mcn.eval.protocols`), written to ``STORE/benchmarks/<name>.json``. The
videos of the folder whose file stem is a benchmark video id are listed in the manifest
``STORE/benchmarks/<name>-inputs.csv`` (columns ``video_id,video_path``), which the ordinary extraction job turns
into the store (``mcn eval prepare`` runs it; ``mcn extract MANIFEST --out STORE`` does the same). Benchmark
texts are not needed in the store: they are tokenised at evaluation time against the store's word table and the
word-vector file.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from mcn import storage
from mcn.configs import save_config
from mcn.errors import MCNError
from mcn.eval import adapters, benchmarks, protocols
from mcn.eval.config import PrepareConfig

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".ts", ".3gp")


def generic(
    path: str | Path, audio_frames: int | None = None, score_normalisation: str | None = None
) -> benchmarks.Benchmark:
    """A definition from a clip list CSV (needs ``audio_frames``), a localisation JSON without settings (needs a
    score normalisation, from the argument or the file's ``score_normalisation``) or an existing definition."""
    path = Path(path)
    if not path.is_file():
        raise MCNError(f"{path} does not exist")
    if path.suffix.lower() == ".csv":
        if audio_frames is None:
            raise MCNError(
                f"{path}: a generic clip list needs its clips' audio length: give --audio-frames N "
                "(100 log-mel frames per second; YouCook2 uses 5120, MSR-VTT 3072)"
            )
        clips = benchmarks.read_retrieval_clips(path)
        return benchmarks.RetrievalBenchmark(
            path.stem, clips, protocols.generic_retrieval(audio_frames), f"{path.name}, {len(clips)} clips"
        )
    data = benchmarks.read_json(path)
    if "settings" in data:
        return benchmarks.load_benchmark(path)
    videos = benchmarks.parse_localization_videos(data, path)
    normalisation = score_normalisation or data.get("score_normalisation")
    if normalisation is None:
        raise MCNError(
            f"{path}: say how step scores become costs: --score-normalisation none (as CrossTask) "
            "or log_softmax (as Mining YouTube)"
        )
    listed = f"{path.name} ({len(videos)} videos)"
    settings = protocols.generic_localization(normalisation, listed)
    return benchmarks.LocalizationBenchmark(str(data.get("name") or path.stem), videos, settings, path.name)


def convert(config: PrepareConfig) -> benchmarks.Benchmark:
    """The definition of the official files, with the config's audio length when it gives one."""
    paths = config.annotations
    if config.benchmark == "youcook2":
        bench = adapters.youcook2(paths[0], config.split)
    elif config.benchmark == "msrvtt":
        bench = adapters.msrvtt(paths[0])
    elif config.benchmark == "crosstask":
        bench = adapters.crosstask(paths[0], paths[1], config.video_list)
    elif config.benchmark == "mining_youtube":
        bench = adapters.mining_youtube(paths[0], config.frame_rate)
    else:
        bench = generic(paths[0], config.audio_frames, config.score_normalisation)
    if config.audio_frames is not None and config.audio_frames != bench.settings.audio_frames:
        logger.warning(
            "%s: audio frames set to %d instead of the benchmark's %d: numbers will not be the reference's",
            bench.name,
            config.audio_frames,
            bench.settings.audio_frames,
        )
        bench.settings = dataclasses.replace(bench.settings, audio_frames=config.audio_frames)
    return bench


def find_videos(folder: str | Path, video_ids: list[str]) -> tuple[dict[str, Path], list[str]]:
    """Video files of ``folder`` (recursively) whose stem is a benchmark id; and the ids with no file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MCNError(f"video folder {folder} does not exist")
    wanted = set(video_ids)
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in VIDEO_SUFFIXES and path.stem in wanted and path.stem not in found:
            found[path.stem] = path.resolve()
    return found, [v for v in video_ids if v not in found]


def write_manifest(path: Path, found: dict[str, Path]) -> None:
    """The extraction manifest: ``video_id,video_path``."""
    storage.write_csv(path, [("video_id", "video_path"), *((v, str(p)) for v, p in found.items())])


@dataclass(frozen=True)
class Prepared:
    definition: Path
    manifest: Path
    num_found: int
    num_missing: int


def run_prepare(config: PrepareConfig) -> Prepared:
    """Convert, list the videos found; write the definition, the manifest and the resolved config."""
    bench = convert(config)
    found, missing = find_videos(config.videos, benchmarks.benchmark_video_ids(bench))
    if not found:
        raise MCNError(
            f"none of the {len(missing)} benchmark videos is in {config.videos} "
            "(files are matched by stem = video id)"
        )
    folder = Path(config.out) / "benchmarks"
    manifest = config.manifest_path(bench.name)
    write_manifest(manifest, found)
    save_config(config, folder / f"{bench.name}-prepare.json")
    definition = folder / f"{bench.name}.json"
    benchmarks.write_benchmark(definition, bench)
    logger.info(
        "%s: %d videos found, %d missing (the strict protocol counts their clips as misses)",
        bench.name,
        len(found),
        len(missing),
    )
    return Prepared(definition, manifest, len(found), len(missing))
