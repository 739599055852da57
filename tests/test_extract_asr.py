"""The transformers ASR backend on a real Hugging Face Whisper-base checkpoint.

No Hugging Face Whisper checkpoint is available offline, so the module converts the CTranslate2 Whisper base
that the pip packages carry (see :mod:`hf_whisper`) into one, checks the conversion against CTranslate2
itself, and then runs :class:`mcn.extract.asr.TransformersAsr` on espeak-ng speech, next to faster-whisper.
Nothing is downloaded: the Hugging Face hub is switched off for the whole module.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import time
from math import gcd
from types import SimpleNamespace

import numpy as np
import pytest
from hf_whisper import convert_whisper, read_ct2_model

from mcn.errors import MCNError
from mcn.extract import asr
from mcn.extract.asr import AsrConfig

SR = asr.SAMPLE_RATE
SENTENCE = "Slice the tomato and boil the pasta. Then stir the sauce with a wooden spoon."
FIRST, SECOND = "Slice the tomato and boil the pasta.", "Sprinkle some cheese on the warm bread."


@pytest.fixture(scope="module", autouse=True)
def offline_and_one_thread():
    """No hub access (also for a huggingface_hub that another module imported first), one torch thread:
    the decoder's many small matrix products only slow down with threads on a busy 2-core machine."""
    import huggingface_hub.constants
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ct2_dir(tmp_path_factory):
    return asr.assemble_whisper_base(tmp_path_factory.mktemp("whisper") / "base-ct2")


@pytest.fixture(scope="module")
def hf_dir(ct2_dir, tmp_path_factory):
    return convert_whisper(ct2_dir, tmp_path_factory.mktemp("whisper") / "base-hf")


@pytest.fixture(scope="module")
def transformers_asr(hf_dir):
    return asr.TransformersAsr(str(hf_dir), "cpu", "en")


@pytest.fixture(scope="module")
def synth():
    from mcn.sample.speech import SpeechSynthesizer

    return SpeechSynthesizer()


def speak(synth, text: str) -> np.ndarray:
    """espeak-ng speech of ``text`` as a 16 kHz float32 waveform."""
    from scipy.signal import resample_poly

    utterance = synth(text)
    g = gcd(SR, utterance.sample_rate)
    samples = utterance.samples.astype(np.float32) / 32768.0
    return resample_poly(samples, SR // g, utterance.sample_rate // g).astype(np.float32)


@pytest.fixture(scope="module")
def speech(synth):
    return speak(synth, SENTENCE)


def words(captions) -> list[str]:
    return re.findall(r"[a-z']+", " ".join(text for _, _, text in captions).lower())


def assert_well_formed(captions, duration: float) -> None:
    assert isinstance(captions, list)
    previous_start = 0.0
    for start, end, text in captions:
        assert isinstance(start, float) and isinstance(end, float) and isinstance(text, str)
        assert 0.0 <= start <= end <= duration + 1e-6, (start, end, duration)
        assert start >= previous_start - 1e-6, captions  # in time order
        assert text == text.strip() and text
        previous_start = start


# ---------------------------------------------------------------------------------------------------------
# the conversion


def test_ct2_reader_reads_whisper_base(ct2_dir):
    spec, variables = read_ct2_model(ct2_dir / "model.bin")
    assert spec == "WhisperSpec"
    assert variables["decoder/embeddings/weight"].shape == (51865, 512)
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]  # an alias
    assert variables["encoder/conv1/weight"].shape == (512, 80, 3)
    assert int(variables["encoder/num_heads"]) == int(variables["decoder/num_heads"]) == 8
    assert {k.split("/")[1] for k in variables if re.match(r"encoder/layer_\d", k)} == {
        f"layer_{i}" for i in range(6)
    }


def test_ct2_reader_rejects_a_truncated_file(ct2_dir, tmp_path):
    data = (ct2_dir / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[: 1 << 20])
    with pytest.raises(ValueError, match="truncated"):
        read_ct2_model(tmp_path / "model.bin")


def test_converted_folder_is_a_complete_hf_whisper_checkpoint(hf_dir, ct2_dir):
    from transformers import AutoConfig, AutoProcessor, GenerationConfig

    config = AutoConfig.from_pretrained(hf_dir)
    assert config.model_type == "whisper"
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (512, 6, 6)
    assert (config.encoder_attention_heads, config.decoder_attention_heads) == (8, 8)
    assert (config.num_mel_bins, config.vocab_size, config.max_target_positions) == (80, 51865, 448)
    assert config.tie_word_embeddings

    ct2_config = json.loads((ct2_dir / "config.json").read_text())
    generation = GenerationConfig.from_pretrained(hf_dir)
    assert generation.decoder_start_token_id == 50258
    assert generation.eos_token_id == generation.pad_token_id == 50257
    assert generation.is_multilingual
    assert generation.lang_to_id["<|en|>"] == 50259 and len(generation.lang_to_id) == 99
    assert generation.task_to_id == {"translate": 50358, "transcribe": 50359}
    assert generation.no_timestamps_token_id == 50363
    assert generation.suppress_tokens == ct2_config["suppress_ids"]
    assert generation.begin_suppress_tokens == ct2_config["suppress_ids_begin"] == [220, 50257]

    processor = AutoProcessor.from_pretrained(hf_dir)
    features = processor.feature_extractor
    assert (features.feature_size, features.sampling_rate, features.n_samples) == (80, SR, 30 * SR)
    tokenizer = processor.tokenizer
    assert tokenizer.all_special_ids[-1] + 1 == 50364  # where Whisper's tokenizer finds <|0.00|>
    assert tokenizer.convert_ids_to_tokens([50258, 50259, 50359, 50363, 50364]) == [
        "<|startoftranscript|>",
        "<|en|>",
        "<|transcribe|>",
        "<|notimestamps|>",
        "<|0.00|>",
    ]
    ids = tokenizer(" boil the pasta", add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == " boil the pasta"
    decoded = tokenizer.decode([50258, 50259, 50359, 50364, *ids, 50414], output_offsets=True)
    assert decoded["offsets"] == [{"text": " boil the pasta", "timestamp": (0.0, 1.0)}]


@pytest.mark.slow
def test_converted_weights_compute_what_ctranslate2_computes(hf_dir, ct2_dir, speech):
    """Same encoder output and the same greedy tokens as CTranslate2 (float32) on the same features."""
    import ctranslate2
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    processor = WhisperProcessor.from_pretrained(hf_dir)
    features = processor.feature_extractor(speech, sampling_rate=SR, return_tensors="pt").input_features
    reference = ctranslate2.models.Whisper(str(ct2_dir), compute_type="float32", intra_threads=1)
    encoded = reference.encode(ctranslate2.StorageView.from_array(features.numpy()), to_cpu=True)
    prompt = [50258, 50259, 50359, 50363]  # <|startoftranscript|><|en|><|transcribe|><|notimestamps|>
    expected = reference.generate(encoded, [prompt], beam_size=1, max_length=64)[0].sequences_ids[0]
    with torch.inference_mode():
        hidden = model.model.encoder(features).last_hidden_state.numpy()
        tokens = model.generate(features, language="en", task="transcribe", max_new_tokens=60)[0].tolist()
    encoded = np.asarray(encoded)
    assert np.abs(hidden - encoded).max() <= 1e-3 * np.abs(encoded).max()
    assert [t for t in tokens if t < 50257] == expected
    assert "tomato" in processor.tokenizer.decode(expected)


# ---------------------------------------------------------------------------------------------------------
# the backend


@pytest.mark.slow
def test_transformers_asr_hears_what_faster_whisper_hears(transformers_asr, ct2_dir, speech):
    duration = len(speech) / SR
    started = time.perf_counter()
    captions = transformers_asr(speech)
    seconds = time.perf_counter() - started
    reference = asr.FasterWhisperAsr(str(ct2_dir), "cpu", "int8", "en", 1, 1)(speech)
    assert_well_formed(captions, duration)
    heard, expected = words(captions), words(reference)
    agreement = difflib.SequenceMatcher(a=heard, b=expected, autojunk=False).ratio()
    print(
        f"\ntransformers {captions} ({seconds:.1f} s)\nfaster-whisper {reference}\nagreement {agreement:.2f}"
    )
    assert agreement >= 0.8, (heard, expected)
    assert {"slice", "tomato", "boil", "pasta", "sauce", "wooden", "spoon"} <= set(heard)
    assert captions[0][0] <= 0.5 and captions[-1][1] >= duration - 1.0


@pytest.mark.slow
def test_long_audio_is_transcribed_window_by_window(transformers_asr, synth):
    """Over 30 s: two windows, the second one's captions shifted by where the first one was cut."""
    first, second = speak(synth, FIRST), speak(synth, SECOND)
    second_start = 20.3  # the cut lands at the first silent 0.1 s after 20 s: 20.05 s
    track = np.zeros(int(31.5 * SR), np.float32)
    track[SR : SR + len(first)] = 0.8 * first
    at = int(second_start * SR)
    track[at : at + len(second)] = 0.8 * second
    second_end = second_start + len(second) / SR
    duration = len(track) / SR

    windows = asr.whisper_windows(len(track), track)
    assert windows == [(0, int(20.05 * SR)), (int(20.05 * SR), len(track))]
    captions = transformers_asr(track)
    assert_well_formed(captions, duration)
    early = [c for c in captions if c[1] <= 20.05 + 1e-6]
    late = [c for c in captions if c[0] >= 20.05 - 1e-6]
    assert early + late == captions
    print(f"\n{captions}")
    assert len({"slice", "tomato", "boil", "pasta"} & set(words(early))) >= 3
    assert len({"sprinkle", "cheese", "warm", "bread"} & set(words(late))) >= 3
    assert words(captions).count("pasta") <= 1 and words(captions).count("bread") <= 1
    assert early[0][0] <= 1.5 and late[0][0] <= second_start + 0.5
    assert second_end - 1.0 <= late[-1][1] <= second_end + 1.5


def test_windows_tile_the_audio_and_cut_in_pauses():
    assert asr.whisper_windows(0) == []
    assert asr.whisper_windows(30 * SR) == [(0, 30 * SR)]
    assert asr.whisper_windows(75 * SR) == [(0, 30 * SR), (30 * SR, 60 * SR), (60 * SR, 75 * SR)]
    rng = np.random.default_rng(0)
    loud = rng.uniform(-0.5, 0.5, 70 * SR).astype(np.float32)
    loud[int(24.0 * SR) : int(24.3 * SR)] = 0.0  # a pause in the first window's last 10 s
    windows = asr.whisper_windows(len(loud), loud)
    assert windows[0][1] == int(24.0 * SR) + SR // 20
    assert all(last - first <= 30 * SR for first, last in windows)
    assert [w[0] for w in windows[1:]] == [w[1] for w in windows[:-1]]
    assert windows[0][0] == 0 and windows[-1][1] == len(loud)


@pytest.mark.slow
def test_empty_silent_and_broken_audio(transformers_asr):
    assert transformers_asr(np.zeros(0, np.float32)) == []
    assert transformers_asr(np.zeros(3 * SR, np.float32)) == []  # nothing to hear: no invented words
    assert transformers_asr(np.full(SR, np.nan, np.float32)) == []
    captions = transformers_asr(np.zeros((SR // 10, 1), np.float64) + 1e-3)  # short, odd shape and dtype
    assert_well_formed(captions, 0.1)


@pytest.mark.slow
def test_noise_gets_no_invented_words_but_noisy_speech_is_heard(transformers_asr, speech):
    """Whisper puts "Thank you for watching." to faint noise; Whisper's no-speech rule drops it."""
    rng = np.random.default_rng(0)
    for amplitude in (1e-3, 1e-2, 3e-2):
        noise = (rng.standard_normal(8 * SR) * amplitude).astype(np.float32)
        assert transformers_asr(noise) == [], amplitude
        no_speech, mean_logprob = transformers_asr.speech_scores(noise, "Thank you for watching.")
        assert no_speech > asr.NO_SPEECH_THRESHOLD and mean_logprob < asr.LOGPROB_THRESHOLD
    noisy = speech + (rng.standard_normal(len(speech)) * 1e-2).astype(np.float32)
    captions = transformers_asr(noisy)
    assert len({"slice", "tomato", "boil", "pasta", "sauce"} & set(words(captions))) >= 4, captions
    no_speech, mean_logprob = transformers_asr.speech_scores(noisy, " ".join(c[2] for c in captions))
    assert no_speech < asr.NO_SPEECH_THRESHOLD and mean_logprob > asr.LOGPROB_THRESHOLD


@pytest.mark.slow
def test_load_asr_as_the_extraction_calls_it(hf_dir, speech):
    """What the AsrActor and VideoExtractor load, with the language left to Whisper to detect."""
    config = AsrConfig(enabled=True, backend="transformers", model_path=str(hf_dir), language=None)
    model = asr.load_asr(config, "cpu", 1)
    assert isinstance(model, asr.TransformersAsr)
    assert model.generate_kwargs == {"task": "transcribe"}  # no language forced: detected per window
    captions = model(speech)
    assert_well_formed(captions, len(speech) / SR)
    assert {"tomato", "pasta", "spoon"} <= set(words(captions))


@pytest.mark.slow
def test_unknown_language_is_refused_when_loading(hf_dir):
    with pytest.raises(MCNError, match="cannot force language 'klingon'"):
        asr.build_asr("transformers", str(hf_dir), "cpu", "int8", "klingon", 1)


def test_language_arguments():
    multilingual = SimpleNamespace(
        is_multilingual=True,
        lang_to_id={"<|en|>": 50259, "<|de|>": 50261},
        task_to_id={"translate": 50358, "transcribe": 50359},
    )
    for language in ("en", "EN", "english", "<|en|>"):
        assert asr._language_kwargs(multilingual, language, "m") == {"language": "en", "task": "transcribe"}
    assert asr._language_kwargs(multilingual, "german", "m") == {"language": "de", "task": "transcribe"}
    assert asr._language_kwargs(multilingual, None, "m") == {"task": "transcribe"}
    with pytest.raises(MCNError, match="known: de, en"):
        asr._language_kwargs(multilingual, "fr", "m")
    english_only = SimpleNamespace(is_multilingual=False)
    assert asr._language_kwargs(english_only, "en", "m") == {}
    assert asr._language_kwargs(english_only, None, "m") == {}
    with pytest.raises(MCNError, match="English-only"):
        asr._language_kwargs(english_only, "fr", "m")


def test_missing_or_invalid_model_folders_are_clear_errors(tmp_path, hf_dir):
    def build(path):
        return asr.build_asr("transformers", path, "cpu", "int8", "en", 1)

    with pytest.raises(MCNError, match="needs a local Hugging Face Whisper folder"):
        build(None)
    with pytest.raises(MCNError, match="no config.json"):
        build(str(tmp_path / "nowhere"))
    with pytest.raises(MCNError, match="no config.json"):
        build(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(MCNError, match="not a readable model config"):
        build(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(MCNError, match="'bert' model, not a Hugging Face Whisper model"):
        build(str(tmp_path))
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(hf_dir / name, no_weights / name)
    with pytest.raises(MCNError, match="cannot load the Hugging Face Whisper model"):
        build(str(no_weights))
    with pytest.raises(MCNError, match="unknown ASR backend"):
        asr.build_asr("whisper.cpp", str(hf_dir), "cpu", "int8", "en", 1)
