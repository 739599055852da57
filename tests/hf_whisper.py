"""Test helper: a real Hugging Face Whisper checkpoint, converted offline from the CTranslate2 model folder
that :func:`mcn.extract.asr.assemble_whisper_base` builds from the pip packages.

CTranslate2's ``model.bin`` is a flat little-endian binary file:

- ``uint32`` format version, then the spec name (a string) and the ``uint32`` spec revision;
- ``uint32`` number of variables, each: name (string), ``uint8`` rank, ``rank`` x ``uint32`` dimensions,
  ``uint8`` dtype id, ``uint32`` byte count, then the raw array bytes (row major);
- ``uint32`` number of aliases, each: alias name (string) then the name of the variable it stands for.

A string is a ``uint16`` length that counts a trailing NUL byte, then the UTF-8 bytes and the NUL.

The Whisper weights are mapped onto ``WhisperForConditionalGeneration``'s state dict: CTranslate2 fuses the
self-attention q/k/v projections (and the cross-attention k/v ones) into one matrix each, with a zero bias
for the keys, which Hugging Face Whisper's ``k_proj`` does not have. Int8 weights (a ``weight_scale`` per
output row) are dequantised; float16 weights are cast to float32.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

# CTranslate2's dtype ids, in the order of its type enum.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}

# The Whisper special tokens that follow the language tokens, in vocabulary order.
_TASK_TOKENS = ("<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>")


class _Reader:
    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def _take(self, num_bytes: int) -> memoryview:
        if self.pos + num_bytes > len(self.data):
            raise ValueError(f"model.bin is truncated: {num_bytes} bytes wanted at byte {self.pos}")
        self.pos += num_bytes
        return self.data[self.pos - num_bytes : self.pos]

    def scalar(self, fmt: str) -> int:
        (value,) = struct.unpack("<" + fmt, self._take(struct.calcsize(fmt)))
        return value

    def string(self) -> str:
        length = self.scalar("H")
        raw = bytes(self._take(length))
        if not raw.endswith(b"\0"):
            raise ValueError(f"model.bin: unterminated string at byte {self.pos - length}")
        return raw[:-1].decode("utf-8")

    def array(self) -> np.ndarray:
        rank = self.scalar("B")
        shape = tuple(self.scalar("I") for _ in range(rank))
        dtype_id = self.scalar("B")
        num_bytes = self.scalar("I")
        if dtype_id not in _DTYPES:
            raise ValueError(f"model.bin: unsupported dtype id {dtype_id} (bfloat16 is not handled)")
        dtype = np.dtype(_DTYPES[dtype_id]).newbyteorder("<")
        if num_bytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise ValueError(f"model.bin: {num_bytes} bytes do not fit shape {shape} of {dtype}")
        return np.frombuffer(self._take(num_bytes), dtype).reshape(shape)


def read_ct2_model(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, {variable name: array}) of a CTranslate2 ``model.bin``; aliases become extra keys."""
    reader = _Reader(Path(path).read_bytes())
    version = reader.scalar("I")
    if not 3 <= version <= 6:
        raise ValueError(f"{path}: unknown CTranslate2 binary version {version}")
    spec = reader.string()
    reader.scalar("I")  # spec revision
    variables = {}
    for _ in range(reader.scalar("I")):
        name = reader.string()
        variables[name] = reader.array()
    for _ in range(reader.scalar("I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    if reader.pos != len(reader.data):
        raise ValueError(f"{path}: {len(reader.data) - reader.pos} trailing bytes")
    return spec, variables


def _float_weights(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The float tensors as float32, int8 matrices dequantised with their per-row ``weight_scale``."""
    out = {}
    for name, value in variables.items():
        if name.endswith("/weight_scale"):
            continue
        if value.dtype == np.int8 and value.ndim >= 2:
            scale = variables[name + "_scale"].astype(np.float32)
            out[name] = value.astype(np.float32) / scale.reshape(-1, *([1] * (value.ndim - 1)))
        elif value.dtype in (np.float16, np.float32) and value.ndim >= 1:
            out[name] = value.astype(np.float32)
    return out


def _num_layers(weights: dict[str, np.ndarray], stack: str) -> int:
    found = {int(m.group(1)) for k in weights if (m := re.match(rf"{stack}/layer_(\d+)/", k))}
    if found != set(range(len(found))):
        raise ValueError(f"{stack} layers are not numbered 0..n-1: {sorted(found)}")
    return len(found)


def whisper_state_dict(variables: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
    """(state dict of ``WhisperForConditionalGeneration``, WhisperConfig keyword arguments)."""
    w = _float_weights(variables)
    d_model = w["encoder/conv1/bias"].shape[0]
    state: dict[str, np.ndarray] = {}

    def take(hf: str, ct2: str) -> None:
        state[hf] = w.pop(ct2)

    def norm(hf: str, ct2: str) -> None:
        take(f"{hf}.weight", f"{ct2}/gamma")
        take(f"{hf}.bias", f"{ct2}/beta")

    def linear(hf: str, ct2: str) -> None:
        take(f"{hf}.weight", f"{ct2}/weight")
        take(f"{hf}.bias", f"{ct2}/bias")

    def split(hf_prefix: str, names: tuple[str, ...], ct2: str) -> None:
        weight, bias = w.pop(f"{ct2}/weight"), w.pop(f"{ct2}/bias")
        if weight.shape[0] != len(names) * d_model:
            raise ValueError(f"{ct2}: {weight.shape[0]} rows, expected {len(names)} x {d_model}")
        for i, name in enumerate(names):
            rows = slice(i * d_model, (i + 1) * d_model)
            state[f"{hf_prefix}.{name}.weight"] = weight[rows]
            if name == "k_proj":  # Whisper's keys have no bias: CTranslate2 stores zeros there
                if np.abs(bias[rows]).max() > 1e-6:
                    raise ValueError(f"{ct2}: the key projection has a non-zero bias")
            else:
                state[f"{hf_prefix}.{name}.bias"] = bias[rows]

    def layer_common(hf: str, ct2: str) -> None:
        split(f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"), f"{ct2}/self_attention/linear_0")
        linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")

    enc, dec = "model.encoder", "model.decoder"
    encoder_layers, decoder_layers = _num_layers(w, "encoder"), _num_layers(w, "decoder")
    encoder_ffn_dim = w["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    decoder_ffn_dim = w["decoder/layer_0/ffn/linear_0/weight"].shape[0]
    linear(f"{enc}.conv1", "encoder/conv1")
    linear(f"{enc}.conv2", "encoder/conv2")
    take(f"{enc}.embed_positions.weight", "encoder/position_encodings/encodings")
    norm(f"{enc}.layer_norm", "encoder/layer_norm")
    for i in range(encoder_layers):
        layer_common(f"{enc}.layers.{i}", f"encoder/layer_{i}")

    take(f"{dec}.embed_tokens.weight", "decoder/embeddings/weight")
    w.pop("decoder/projection/weight", None)  # an alias of the embeddings: HF ties proj_out to them
    take(f"{dec}.embed_positions.weight", "decoder/position_encodings/encodings")
    norm(f"{dec}.layer_norm", "decoder/layer_norm")
    for i in range(decoder_layers):
        hf, ct2 = f"{dec}.layers.{i}", f"decoder/layer_{i}"
        layer_common(hf, ct2)
        linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0")
        split(f"{hf}.encoder_attn", ("k_proj", "v_proj"), f"{ct2}/attention/linear_1")
        linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2")
        norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
    if w:
        raise ValueError(f"CTranslate2 variables left unmapped: {sorted(w)}")

    vocab_size = state[f"{dec}.embed_tokens.weight"].shape[0]
    config = {
        "vocab_size": vocab_size,
        "num_mel_bins": state[f"{enc}.conv1.weight"].shape[1],
        "d_model": d_model,
        "encoder_layers": encoder_layers,
        "decoder_layers": decoder_layers,
        "encoder_attention_heads": int(variables["encoder/num_heads"]),
        "decoder_attention_heads": int(variables["decoder/num_heads"]),
        "encoder_ffn_dim": encoder_ffn_dim,
        "decoder_ffn_dim": decoder_ffn_dim,
        "max_source_positions": state[f"{enc}.embed_positions.weight"].shape[0],
        "max_target_positions": state[f"{dec}.embed_positions.weight"].shape[0],
    }
    return state, config


def convert_whisper(ct2_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a Hugging Face Whisper checkpoint (model, generation config, tokenizer, feature extractor) to
    ``out_dir`` from a CTranslate2 Whisper folder (``model.bin``, ``config.json``, ``tokenizer.json``)."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    spec, variables = read_ct2_model(ct2_dir / "model.bin")
    if spec != "WhisperSpec":
        raise ValueError(f"{ct2_dir} holds a {spec}, not a Whisper model")
    state, dims = whisper_state_dict(variables)
    ct2_config = json.loads((ct2_dir / "config.json").read_text())

    # The tokenizer: the package's tokenizer.json is a complete `tokenizers` file (BPE, byte-level, and the
    # Whisper special tokens as added tokens); the fast tokenizer class adds Whisper's prefix logic.
    # Every special added token (up to <|notimestamps|>) is declared special: the Whisper tokenizer finds the
    # first timestamp token as the one after the last special id.
    added = json.loads((ct2_dir / "tokenizer.json").read_text())["added_tokens"]
    specials = [t["content"] for t in sorted(added, key=lambda t: t["id"]) if t["special"]]
    with tempfile.TemporaryDirectory() as staging:
        shutil.copyfile(ct2_dir / "tokenizer.json", Path(staging, "tokenizer.json"))
        tokenizer = WhisperTokenizerFast.from_pretrained(staging, extra_special_tokens=specials)
    vocab = tokenizer.get_vocab()

    def token_id(token: str) -> int:
        if token not in vocab:
            raise ValueError(f"tokenizer.json has no {token}")
        return vocab[token]

    end_of_text = token_id("<|endoftext|>")
    start_of_transcript = token_id("<|startoftranscript|>")
    no_timestamps = token_id("<|notimestamps|>")
    lang_ids = ct2_config["lang_ids"]
    lang_to_id = {tokenizer.convert_ids_to_tokens(i): i for i in lang_ids}
    is_multilingual = dims["vocab_size"] >= 51865
    if is_multilingual and not all(re.fullmatch(r"<\|[a-z]{2,3}\|>", t) for t in lang_to_id):
        raise ValueError(f"lang_ids are not language tokens: {list(lang_to_id)[:5]}")
    translate, transcribe, _, start_of_prev = (token_id(t) for t in _TASK_TOKENS)

    # Special tokens and suppressed tokens: the same in the model config and the generation config.
    tokens = dict(
        pad_token_id=end_of_text,
        bos_token_id=end_of_text,
        eos_token_id=end_of_text,
        decoder_start_token_id=start_of_transcript,
        suppress_tokens=ct2_config["suppress_ids"],
        begin_suppress_tokens=ct2_config["suppress_ids_begin"],
    )
    config = WhisperConfig(
        **dims, activation_function="gelu", scale_embedding=False, tie_word_embeddings=True, **tokens
    )
    with torch.device("meta"):  # no random initialisation: every weight comes from the state dict
        model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False, assign=True
    )
    if unexpected or set(missing) - {"proj_out.weight"}:
        raise ValueError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    if model.proj_out.weight is not model.model.decoder.embed_tokens.weight:
        raise ValueError("proj_out is not tied to the token embeddings")
    left_out = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left_out:
        raise ValueError(f"weights left without values: {left_out}")

    model.generation_config = GenerationConfig(
        **tokens,
        max_length=dims["max_target_positions"],
        is_multilingual=is_multilingual,
        lang_to_id=lang_to_id if is_multilingual else {},
        task_to_id={"translate": translate, "transcribe": transcribe} if is_multilingual else {},
        no_timestamps_token_id=no_timestamps,
        prev_sot_token_id=start_of_prev,
        max_initial_timestamp_index=50,  # the first timestamp is at most 1 s into the window
        alignment_heads=[list(pair) for pair in ct2_config.get("alignment_heads", [])],
        return_timestamps=False,
    )

    feature_extractor = WhisperFeatureExtractor(
        feature_size=dims["num_mel_bins"], sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir
