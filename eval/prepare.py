"""``mcn eval prepare``: official annotations + a folder of videos -> a generic benchmark definition + a store.

The adapter named by ``benchmark`` converts the official files (see :mod:`mcn.eval.benchmarks`) into the generic
definition, which is written to ``STORE/benchmarks/<name>.csv`` (retrieval) or ``.json`` (localisation); the
videos of the folder whose file stem is a benchmark video id are listed in ``STORE/benchmarks/<name>-inputs.csv``
and go through the ordinary extraction job into ``STORE``. Rerunning resumes the extraction. Benchmark texts
are not needed in the store: they are tokenised at evaluation time against the store's word table and the
word-vector file (``--word-vectors``, recorded in the store manifest by the extraction job).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

from mcn.configs import apply_overrides, save_config
from mcn.errors import MCNError
from mcn.eval import benchmarks

ADAPTERS = ("youcook2", "msrvtt", "crosstask", "mining_youtube", "generic")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".ts", ".3gp")


@dataclass
class PrepareConfig:
    """``annotations`` per benchmark: youcook2 = [youcookii_annotations_trainval.json]; msrvtt = [JSFusion test
    CSV]; crosstask = [tasks_primary.txt, annotations folder, (optional) videos CSV]; mining_youtube = [folder of
    per-video segment files]; generic = [a retrieval .csv or localisation .json definition]."""

    benchmark: str
    annotations: list[str]
    videos: str
    out: str
    pipeline_preset: str = "default"
    word_vectors: str | None = None
    split: str = "validation"  # YouCook2 subset
    frame_rate: float | None = None  # Mining YouTube: times are frames at this rate (None: seconds)

    def __post_init__(self) -> None:
        if self.benchmark not in ADAPTERS:
            raise ValueError(f"unknown benchmark {self.benchmark!r}; use one of {', '.join(ADAPTERS)}")
        wanted = {"crosstask": (2, 3)}.get(self.benchmark, (1, 1))
        if not wanted[0] <= len(self.annotations) <= wanted[1]:
            raise ValueError(
                f"{self.benchmark} takes {wanted[0]}-{wanted[1]} --annotations paths, got {len(self.annotations)}"
            )
        if self.frame_rate is not None and self.frame_rate <= 0:
            raise ValueError("--frame-rate must be > 0")


def convert(config: PrepareConfig) -> benchmarks.RetrievalBenchmark | benchmarks.LocalizationBenchmark:
    """The generic definition of the official files."""
    paths = config.annotations
    if config.benchmark == "youcook2":
        return benchmarks.youcook2(paths[0], config.split)
    if config.benchmark == "msrvtt":
        return benchmarks.msrvtt(paths[0])
    if config.benchmark == "crosstask":
        return benchmarks.crosstask(paths[0], paths[1], paths[2] if len(paths) > 2 else None)
    if config.benchmark == "mining_youtube":
        return benchmarks.mining_youtube(paths[0], config.frame_rate)
    return benchmarks.load_benchmark(paths[0])


def benchmark_video_ids(bench: benchmarks.RetrievalBenchmark | benchmarks.LocalizationBenchmark) -> list[str]:
    items = bench.clips if isinstance(bench, benchmarks.RetrievalBenchmark) else bench.videos
    return list(dict.fromkeys(item.video_id for item in items))


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


def write_inputs(path: Path, found: dict[str, Path]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["video_id", "video_path"])
        for video_id, video_path in found.items():
            writer.writerow([video_id, str(video_path)])


def run_prepare(config: PrepareConfig) -> Path:
    """Convert, list the videos, run the extraction job; returns the path of the generic definition."""
    bench = convert(config)
    found, missing = find_videos(config.videos, benchmark_video_ids(bench))
    if not found:
        raise MCNError(
            f"none of the {len(missing)} benchmark videos is in {config.videos} (files are matched by stem = video id)"
        )
    folder = Path(config.out) / "benchmarks"
    inputs = folder / f"{bench.name}-inputs.csv"
    write_inputs(inputs, found)
    save_config(config, folder / f"{bench.name}-prepare.json")
    print(f"{bench.name}: {len(found)} videos found, {len(missing)} missing (they will count as misses)")
    run_extraction(str(inputs), config)
    if isinstance(bench, benchmarks.RetrievalBenchmark):
        definition = folder / f"{bench.name}.csv"
        benchmarks.write_retrieval_csv(definition, bench)
    else:
        definition = folder / f"{bench.name}.json"
        benchmarks.write_localization_json(definition, bench)
    print(f"benchmark definition: {definition}")
    return definition


def run_extraction(inputs: str, config: PrepareConfig) -> None:
    """The ordinary extraction job over the benchmark's videos."""
    from mcn.pipeline import config as pipeline_config
    from mcn.pipeline.job import run_extraction as run_job

    if config.pipeline_preset not in pipeline_config.PRESETS:
        raise MCNError(
            f"unknown extraction preset {config.pipeline_preset!r}; use one of {', '.join(pipeline_config.PRESETS)}"
        )
    job = replace(pipeline_config.PRESETS[config.pipeline_preset](), input=inputs, out=config.out)
    if config.word_vectors:
        job = apply_overrides(job, {"extract.text.word_vectors": config.word_vectors})
    run_job(job)
