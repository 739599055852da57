"""extract_video end to end on tiny generated videos with the tiny twin networks."""

import dataclasses
import math

import numpy as np
import pytest
from gensim.models import KeyedVectors
from media import make_video

import mcn.extract
from mcn.configs import apply_overrides, config_from_dict, config_to_dict
from mcn.extract import ExtractConfig, RuntimeConfig, VideoFeatures, extract_video, tiny_cpu
from mcn.extract.decode import DecodeConfig, DecodeError, iter_frame_windows, probe


def assert_unit_fp16_rows(feats, num_rows):
    assert feats.dtype == np.float16 and feats.shape == (num_rows, 2048)
    np.testing.assert_allclose(np.linalg.norm(feats.astype(np.float32), axis=1), 1.0, atol=2e-3)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("media") / "cooking.mp4", seconds=5.0, fps=25, size=(160, 120))


def test_extract_video_gives_every_stream(tmp_path, video):
    captions = tmp_path / "cooking.srt"
    captions.write_text(
        "1\n00:00:00,500 --> 00:00:02,000\nwhisk the eggs\n\n2\n00:00:02,000 --> 00:00:04,000\nadd sugar\n"
    )
    vectors = KeyedVectors(vector_size=3)
    vectors.add_vectors(["eggs", "the", "sugar"], np.eye(3, dtype=np.float32))
    vectors.save_word2vec_format(str(tmp_path / "w2v.bin"), binary=True)
    config = apply_overrides(tiny_cpu(), {"text.word_vectors": str(tmp_path / "w2v.bin")})

    feats = extract_video(video, config, caption_path=captions)

    assert isinstance(feats, VideoFeatures) and feats.info.has_audio
    duration = feats.info.duration
    assert abs(len(feats.feat_2d) - duration) <= 1
    assert_unit_fp16_rows(feats.feat_2d, len(feats.feat_2d))
    num_frames_24 = sum(
        len(w.frames_3d_THWC) for w in iter_frame_windows(video, probe(video), DecodeConfig())
    )
    assert abs(num_frames_24 - 24 * duration) <= 2
    assert_unit_fp16_rows(feats.feat_3d, math.ceil(num_frames_24 / 16))
    assert feats.logmel.dtype == np.float16 and feats.logmel.shape[0] == 40
    assert abs(feats.logmel.shape[1] - 100 * duration) <= 3
    assert feats.caption_source == "srt"
    assert feats.captions == [(0.5, 2.0, "whisk the eggs"), (2.0, 4.0, "add sugar")]
    assert [list(ids) for ids in feats.caption_token_ids] == [[1, 0], [2]]


def test_windows_and_batches_do_not_change_the_features(video):
    whole = extract_video(video, tiny_cpu())
    # 2 s windows hold 48 frames (3 clips); batches of 2 frames / 2 clips split every window.
    windowed_config = dataclasses.replace(
        tiny_cpu(),
        decode=DecodeConfig(window_seconds=2.0),
        runtime=RuntimeConfig(device="cpu", batch_2d=2, batch_3d=2),
    )
    windowed = extract_video(video, windowed_config)
    assert whole.feat_2d.shape == windowed.feat_2d.shape and whole.feat_3d.shape == windowed.feat_3d.shape
    np.testing.assert_allclose(
        whole.feat_2d.astype(np.float32), windowed.feat_2d.astype(np.float32), atol=2e-3
    )
    np.testing.assert_allclose(
        whole.feat_3d.astype(np.float32), windowed.feat_3d.astype(np.float32), atol=2e-3
    )
    np.testing.assert_array_equal(whole.logmel, windowed.logmel)


def test_video_without_audio_or_captions(tmp_path):
    silent = make_video(tmp_path / "silent.mp4", seconds=2.0, audio=False)
    config = tiny_cpu()
    feats = extract_video(silent, config)
    assert feats.logmel is None and not feats.info.has_audio
    assert feats.captions == [] and feats.caption_source == "none" and feats.caption_token_ids is None
    assert_unit_fp16_rows(feats.feat_3d, 3)  # 48 frames at 24 fps
    cached = mcn.extract._cached[1]
    extract_video(silent, config)
    assert mcn.extract._cached[1] is cached  # the networks load once per config
    with pytest.raises(DecodeError) as caught:
        extract_video(tmp_path / "missing.mp4", config)
    assert caught.value.reason == "not_found"


def test_config_validation_presets_and_round_trip():
    config = tiny_cpu()
    assert config_from_dict(ExtractConfig, config_to_dict(config)) == config
    assert mcn.extract.default().models.model_2d == "resnet152"
    with pytest.raises(ValueError, match="batch sizes"):
        RuntimeConfig(batch_3d=0)
    with pytest.raises(ValueError, match="precision_2d"):
        RuntimeConfig(precision_2d="int8")
    with pytest.raises(ValueError, match="device"):
        RuntimeConfig(device="tpu")


@pytest.mark.slow
def test_speech_recognition_gives_the_captions_of_a_video_without_any(tmp_path):
    import subprocess

    from media import FFMPEG

    from mcn.extract import AsrConfig
    from mcn.sample.speech import SpeechSynthesizer, write_wav

    speech = SpeechSynthesizer()("Slice the tomato and boil the pasta.")
    wav = tmp_path / "speech.wav"
    write_wav(wav, speech.samples.astype(np.float32) / 32768.0, speech.sample_rate)
    video = tmp_path / "talk.mp4"
    lavfi = f"testsrc2=size=96x64:rate=25:duration={speech.duration:.2f}"
    subprocess.run(
        [FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", lavfi, "-i", str(wav), "-c:v", "libx264"]
        + ["-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(video)],
        check=True,
    )
    config = tiny_cpu()
    plain = extract_video(video, config)
    assert plain.caption_source == "none" and plain.captions == []
    feats = extract_video(video, config, asr=AsrConfig(enabled=True))
    assert feats.caption_source == "asr"
    heard = " ".join(text for _, _, text in feats.captions).lower().replace(".", " ").replace(",", " ")
    assert {"slice", "tomato", "boil", "pasta"} <= set(heard.split())
    assert 0.0 <= feats.captions[0][0] < feats.captions[-1][1] <= speech.duration + 1.0
    np.testing.assert_array_equal(feats.feat_3d, plain.feat_3d)  # the same stream, the same features


def test_a_video_in_a_bucket_has_the_features_of_its_local_copy(video, s3_bucket):
    from mcn import storage

    storage.copy(video, f"{s3_bucket}/media/cooking.mp4")
    local = extract_video(video, tiny_cpu())
    remote = extract_video(f"{s3_bucket}/media/cooking.mp4", tiny_cpu())
    for name in ("feat_2d", "feat_3d", "logmel"):
        np.testing.assert_array_equal(getattr(remote, name), getattr(local, name), err_msg=name)
    assert remote.info == dataclasses.replace(local.info, path=f"{s3_bucket}/media/cooking.mp4")
