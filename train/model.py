"""The MCN model: gated video/text/audio encoders into one D-dim space, plus reconstruction decoders.

Shapes: B clips, D embed_dim, L words, W word_dim, T log-mel frames, F mel bins (40).
Everything follows the reference (`model_kmeans_ICCV.py`, `model_davenet.py`); the audio trunk and the
mapping to the reference's parameter names live in `mcn.train.audio_net` and `mcn.train.reference_weights`
(both below this module).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mcn.errors import MCNError
from mcn.train.audio_net import ResDAVEnet
from mcn.train.reference_weights import (
    from_reference,
    read_reference_checkpoint,
    reference_sizes,
    strip_prefixes,
    to_reference,
)

AUDIO_CONV_KINDS = ("2d", "1d")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Sizes of the MCN model. ``reference()`` is the released model (about 224 M parameters).

    audio_conv: "2d" keeps the reference's Conv2d with (1, 9) kernels (channels_last friendly); "1d" runs the
        same arithmetic as Conv1d. Both load the same reference weights.
    audio_stem_matmul: compute the (F x 1) stem convolution as one matrix product that writes channels-last
        output directly (same arithmetic, much faster on GPUs than a 1-input-channel convolution).
    audio_channels_last: run the Conv2d audio trunk in channels_last memory format.
    audio_pool_valid_in_training: a fix of the reference, which averages over the zero padding too during
        training; when True, training pools like evaluation (first ``nframes // ratio`` steps only).
    video_batchnorm: standardise the video features (BatchNorm1d without affine parameters, running statistics
        at evaluation) before the video gate. Not in the reference (its checkpoints cannot hold it); useful when
        the features carry their signal in low-variance directions, as random-init extractor features do.
    """

    embed_dim: int = 6144
    video_dim: int = 4096
    word_dim: int = 300
    audio_mel_bins: int = 40
    audio_widths: tuple[int, ...] = (128, 256, 512, 1024)
    audio_layers: tuple[int, ...] = (2, 2, 2, 2)
    audio_kernel: int = 9
    recon_hidden: int = 1024
    reconstruction: bool = True
    reconstruction_weight: float = 50.0
    audio_conv: str = "2d"
    audio_stem_matmul: bool = False
    audio_channels_last: bool = False
    audio_pool_valid_in_training: bool = False
    video_batchnorm: bool = False

    def __post_init__(self) -> None:
        for name in ("embed_dim", "video_dim", "word_dim", "audio_mel_bins", "recon_hidden"):
            if getattr(self, name) < 1:
                raise MCNError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "audio_widths", tuple(self.audio_widths))
        object.__setattr__(self, "audio_layers", tuple(self.audio_layers))
        if len(self.audio_widths) != len(self.audio_layers) or not self.audio_widths:
            raise MCNError(
                f"model.audio_widths {self.audio_widths} and model.audio_layers {self.audio_layers} must be "
                "non-empty and of equal length (one width and one block count per stage)"
            )
        if min(self.audio_widths) < 1 or min(self.audio_layers) < 1:
            raise MCNError("model.audio_widths and model.audio_layers must be positive")
        if self.audio_kernel < 1 or self.audio_kernel % 2 == 0:
            raise MCNError(f"model.audio_kernel must be odd and positive, got {self.audio_kernel}")
        if self.audio_conv not in AUDIO_CONV_KINDS:
            raise MCNError(f"model.audio_conv must be one of {AUDIO_CONV_KINDS}, got {self.audio_conv!r}")
        if self.audio_channels_last and self.audio_conv != "2d":
            raise MCNError(
                "model.audio_channels_last needs model.audio_conv='2d' (1-D tensors have no such format)"
            )
        if self.reconstruction_weight < 0:
            raise MCNError(f"model.reconstruction_weight must be >= 0, got {self.reconstruction_weight}")


def reference() -> ModelConfig:
    """The released MCN model: D=6144, 4096-d video features, 300-d word2vec."""
    return ModelConfig()


def glove50() -> ModelConfig:
    """The reference model fed with 50-d GloVe word vectors instead of 300-d word2vec."""
    return ModelConfig(word_dim=50)


def fast() -> ModelConfig:
    """The reference model with the GPU-friendly implementation switches (same arithmetic, same weights)."""
    return ModelConfig(audio_stem_matmul=True, audio_channels_last=True)


def tiny() -> ModelConfig:
    """A few-thousand-parameter twin for CPU tests."""
    return ModelConfig(
        embed_dim=24,
        video_dim=16,
        word_dim=8,
        audio_widths=(8, 8, 16, 16),
        audio_layers=(1, 1, 1, 1),
        recon_hidden=12,
    )


PRESETS = {"reference": reference, "glove50": glove50, "fast": fast, "tiny": tiny}


class ContextGating(nn.Module):
    """``x * sigmoid(Linear(x))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.linear(x))


class GatedEmbeddingUnit(nn.Module):
    """Linear projection followed by context gating; no normalisation of the output."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.gating = ContextGating(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gating(self.linear(x))


def reconstruction_decoder(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """``Linear -> ReLU -> Linear -> ReLU`` (indices 0 and 2 hold the weights, as in the reference)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim), nn.ReLU())


def per_clip_mse(prediction_BX: torch.Tensor, target_BX: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the feature axis, one value per clip, in float32."""
    return (prediction_BX.float() - target_BX.float()).pow(2).mean(dim=-1)


class MCNModel(nn.Module):
    """Video, audio and text encoders into one space; ``train()``/``eval()`` switch the audio pooling."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        audio_dim = config.audio_widths[-1]
        self.video_norm = (
            nn.BatchNorm1d(config.video_dim, affine=False) if config.video_batchnorm else nn.Identity()
        )
        self.video_gate = GatedEmbeddingUnit(config.video_dim, dim)
        self.audio_net = ResDAVEnet(
            mel_bins=config.audio_mel_bins,
            widths=config.audio_widths,
            layers=config.audio_layers,
            kernel=config.audio_kernel,
            conv=config.audio_conv,
            stem_matmul=config.audio_stem_matmul,
            channels_last=config.audio_channels_last,
        )
        self.audio_gate = GatedEmbeddingUnit(audio_dim, audio_dim)
        self.audio_projection = nn.Linear(audio_dim, dim)
        self.word_projection = nn.Linear(config.word_dim, dim)
        self.text_gate = GatedEmbeddingUnit(dim, dim)
        if config.reconstruction:
            self.video_decoder = reconstruction_decoder(dim, config.recon_hidden, config.video_dim)
            self.audio_decoder = reconstruction_decoder(dim, config.recon_hidden, audio_dim)
            self.text_decoder = reconstruction_decoder(dim, config.recon_hidden, dim)

    # -- encoders -----------------------------------------------------------------------------------------
    def pool_audio(
        self, feats_BCS: torch.Tensor, num_input_frames: int, nframes_B: torch.Tensor
    ) -> torch.Tensor:
        """Training: mean over all output steps (padding included, as the reference).

        Evaluation: mean over the first ``max(1, nframes // round(T_in / T_out))`` steps.
        """
        if self.training and not self.config.audio_pool_valid_in_training:
            return feats_BCS.mean(dim=2)
        num_steps = feats_BCS.shape[2]
        ratio = round(num_input_frames / num_steps)
        keep_B = torch.clamp(nframes_B.long() // ratio, min=1, max=num_steps)
        mask_BS = torch.arange(num_steps, device=feats_BCS.device)[None, :] < keep_B[:, None]
        summed_BC = (feats_BCS * mask_BS[:, None, :].to(feats_BCS.dtype)).sum(dim=2)
        return summed_BC / keep_B[:, None].to(summed_BC.dtype)

    def audio_features(self, logmel_BFT: torch.Tensor, nframes_B: torch.Tensor) -> torch.Tensor:
        """The pooled trunk output (B, widths[-1]): the audio reconstruction target."""
        return self.pool_audio(self.audio_net(logmel_BFT), logmel_BFT.shape[-1], nframes_B)

    def text_features(self, words_BLW: torch.Tensor) -> torch.Tensor:
        """``max over words of ReLU(Linear(w))`` (B, D): the text reconstruction target.

        ReLU is applied after the max (they commute), which saves one pass over the (B, L, D) tensor.
        """
        return F.relu(self.word_projection(words_BLW).amax(dim=1))

    def encode_video(self, video_BV: torch.Tensor) -> torch.Tensor:
        return self.video_gate(self.video_norm(video_BV))

    def encode_audio(self, logmel_BFT: torch.Tensor, nframes_B: torch.Tensor) -> torch.Tensor:
        return self.audio_projection(self.audio_gate(self.audio_features(logmel_BFT, nframes_B)))

    def encode_text(self, words_BLW: torch.Tensor) -> torch.Tensor:
        return self.text_gate(self.text_features(words_BLW))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Embeddings ``video``, ``audio``, ``text`` (B, D) and, when enabled, ``reconstruction_loss``.

        ``reconstruction_loss = reconstruction_weight * mean over clips of (mse_v + mse_a + mse_t)``, each mse
        averaged over its feature axis; targets are not detached (as the reference).
        """
        video_in = batch["video"]
        audio_pooled = self.audio_features(batch["audio"], batch["nframes"])
        text_pooled = self.text_features(batch["text"])
        video = self.encode_video(video_in)
        audio = self.audio_projection(self.audio_gate(audio_pooled))
        text = self.text_gate(text_pooled)
        out = {"video": video, "audio": audio, "text": text}
        if self.config.reconstruction:
            error_B = (
                per_clip_mse(self.video_decoder(video), video_in)
                + per_clip_mse(self.audio_decoder(audio), audio_pooled)
                + per_clip_mse(self.text_decoder(text), text_pooled)
            )
            out["reconstruction_loss"] = self.config.reconstruction_weight * error_B.mean()
        return out

    # -- reference weights -------------------------------------------------------------------------------
    def reference_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's weights under the reference's parameter names and shapes."""
        if self.config.video_batchnorm:
            raise MCNError(
                "a model with video_batchnorm=True has no reference layout (the reference feeds the video "
                "features to its gate as they are); keep this project's checkpoint format for it"
            )
        return to_reference(self.state_dict())

    @classmethod
    def from_reference_state_dict(
        cls, state_dict: dict[str, torch.Tensor], config: ModelConfig | None = None
    ) -> MCNModel:
        """Build a model from a reference state dict; ``config`` defaults to the sizes read from its shapes."""
        state_dict = strip_prefixes(state_dict)
        config = config if config is not None else ModelConfig(**reference_sizes(state_dict))
        if config.video_batchnorm:
            raise MCNError(
                "reference checkpoints hold no video BatchNorm: load them with video_batchnorm=False"
            )
        model = cls(config)
        model.load_state_dict(from_reference(state_dict, model.state_dict()))
        return model

    @classmethod
    def load_reference_checkpoint(cls, path: str | Path, config: ModelConfig | None = None) -> MCNModel:
        """Load a released MCN ``.pth`` (a plain state dict, optionally with ``module.`` prefixes)."""
        return cls.from_reference_state_dict(read_reference_checkpoint(path), config)
