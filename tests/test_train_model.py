"""MCN model: shapes, audio pooling, implementation variants, parameter count, config validation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mcn.errors import MCNError
from mcn.train.model import MCNModel, ModelConfig, reference, tiny


def make_batch(
    config: ModelConfig, num_clips: int = 5, frames: int = 64, seed: int = 0
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "video": torch.randn(num_clips, config.video_dim, generator=g),
        "audio": torch.randn(num_clips, config.audio_mel_bins, frames, generator=g),
        "nframes": torch.tensor([64, 40, 17, 3, 0][:num_clips]),
        "text": torch.randn(num_clips, 6, config.word_dim, generator=g),
    }


def trained_tiny(**overrides) -> MCNModel:
    """A tiny model whose BatchNorm running statistics moved away from their initial values."""
    torch.manual_seed(0)
    model = MCNModel(dataclasses.replace(tiny(), **overrides))
    model(make_batch(model.config, seed=1))
    return model.eval()


def test_forward_shapes_and_reconstruction_term():
    model = MCNModel(tiny())
    out = model(make_batch(model.config))
    assert set(out) == {"video", "audio", "text", "reconstruction_loss"}
    for name in ("video", "audio", "text"):
        assert out[name].shape == (5, 24)
    assert out["reconstruction_loss"].dim() == 0 and out["reconstruction_loss"] > 0
    out["reconstruction_loss"].backward()
    assert model.video_gate.linear.weight.grad is not None  # targets are not detached, embeddings get grads
    no_recon = MCNModel(dataclasses.replace(tiny(), reconstruction=False))
    assert "reconstruction_loss" not in no_recon(make_batch(no_recon.config))


def test_reconstruction_loss_is_weighted_mean_of_per_clip_mses():
    model = trained_tiny()
    batch = make_batch(model.config)
    out = model(batch)
    audio_pooled = model.audio_features(batch["audio"], batch["nframes"])
    text_pooled = F.relu(model.word_projection(batch["text"])).max(dim=1).values
    expected = (
        ((model.video_decoder(out["video"]) - batch["video"]) ** 2).mean()
        + ((model.audio_decoder(out["audio"]) - audio_pooled) ** 2).mean()
        + ((model.text_decoder(out["text"]) - text_pooled) ** 2).mean()
    )
    torch.testing.assert_close(out["reconstruction_loss"], 50 * expected)


def test_audio_pooling_train_and_eval_hand_case():
    model = MCNModel(tiny())
    feats_BCS = torch.tensor([[[1.0, 2.0, 3.0, 4.0]], [[10.0, 20.0, 30.0, 40.0]], [[5.0, 6.0, 7.0, 9.0]]])
    nframes = torch.tensor([40, 0, 1000])  # ratio round(64 / 4) = 16 -> keep 2, max(1, 0), all 4
    model.train()
    torch.testing.assert_close(
        model.pool_audio(feats_BCS, 64, nframes), torch.tensor([[2.5], [25.0], [6.75]])
    )
    model.eval()
    torch.testing.assert_close(
        model.pool_audio(feats_BCS, 64, nframes), torch.tensor([[1.5], [10.0], [6.75]])
    )


def test_audio_trunk_output_length_and_eval_pooling_in_the_model():
    model = trained_tiny()
    assert model.audio_net(torch.zeros(1, 40, 1000)).shape == (1, 16, 63)  # 1000 -> 500 -> 250 -> 125 -> 63
    batch = make_batch(model.config)
    feats_BCS = model.audio_net(batch["audio"])  # 64 frames -> 4 steps, ratio 16
    keep = [4, 2, 1, 1, 1]  # nframes 64, 40, 17, 3, 0
    pooled = torch.stack([feats_BCS[i, :, : keep[i]].mean(dim=1) for i in range(5)])
    expected = model.audio_projection(model.audio_gate(pooled))
    torch.testing.assert_close(model.encode_audio(batch["audio"], batch["nframes"]), expected)
    torch.testing.assert_close(model(batch)["audio"], expected)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(audio_conv="1d"),
        dict(audio_stem_matmul=True),
        dict(audio_conv="1d", audio_stem_matmul=True),
        dict(audio_stem_matmul=True, audio_channels_last=True),
    ],
)
def test_implementation_variants_compute_the_same_embeddings(overrides):
    base = trained_tiny()
    variant = MCNModel.from_reference_state_dict(
        base.reference_state_dict(), dataclasses.replace(tiny(), **overrides)
    )
    batch = make_batch(base.config, seed=3)
    for training in (False, True):
        base.train(training)
        variant.train(training)
        expected, got = base(batch), variant(batch)
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-5)


def expected_reference_parameter_count() -> int:
    def lin(i, o):
        return i * o + o

    d, v, w, h = 6144, 4096, 300, 1024
    audio = 40 * 128 + 2 * 128  # stem conv + BN
    in_ch = 128
    for width in (128, 256, 512, 1024):
        first = in_ch * width * 9 + width * width * 9 + 4 * width + in_ch * width + 2 * width
        audio += first + 2 * width * width * 9 + 4 * width
        in_ch = width
    gates = 2 * lin(d, d) + lin(v, d) + lin(d, d) + 2 * lin(1024, 1024)
    recon = lin(d, h) + lin(h, v) + lin(d, h) + lin(h, 1024) + lin(d, h) + lin(h, d)
    return gates + audio + lin(1024, d) + lin(w, d) + recon


def test_reference_size_parameter_count():
    with torch.device("meta"):  # no memory: shapes only
        model = MCNModel(reference())
    count = sum(p.numel() for p in model.parameters())
    assert count == expected_reference_parameter_count()
    assert abs(count - 224e6) < 1e6


def test_config_is_frozen_keyword_only_and_validated():
    config = tiny()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.embed_dim = 32
    with pytest.raises(TypeError):
        ModelConfig(24)  # keyword-only
    assert ModelConfig(audio_widths=[8, 8], audio_layers=[1, 1]).audio_widths == (8, 8)  # lists become tuples
    for kwargs, needle in [
        (dict(audio_conv="3d"), "model.audio_conv"),
        (dict(audio_widths=(8, 16), audio_layers=(1,)), "equal length"),
        (dict(audio_conv="1d", audio_channels_last=True), "channels_last"),
        (dict(embed_dim=0), "model.embed_dim"),
        (dict(audio_kernel=4), "odd"),
        (dict(reconstruction_weight=-1.0), "reconstruction_weight"),
    ]:
        with pytest.raises(MCNError, match=needle):
            ModelConfig(**kwargs)


def test_video_batchnorm_standardises_video_features_and_has_no_reference_layout():
    config = dataclasses.replace(tiny(), video_batchnorm=True)
    model = MCNModel(config)
    # Features with a large common offset and tiny per-dimension spread, like random-init extractor features.
    video_BV = 5.0 + 0.1 * torch.randn(64, config.video_dim)
    model.train()
    for _ in range(200):  # running statistics converge to the batch statistics
        model.video_norm(video_BV)
    model.eval()
    normed = model.video_norm(video_BV)
    assert normed.mean(0).abs().max() < 0.05 and (normed.std(0) - 1).abs().max() < 0.05
    assert torch.equal(model.encode_video(video_BV), model.video_gate(normed))
    plain = MCNModel(tiny())
    assert torch.equal(plain.encode_video(video_BV), plain.video_gate(video_BV))  # off by default: identity
    with pytest.raises(MCNError, match="video_batchnorm"):
        model.reference_state_dict()
    with pytest.raises(MCNError, match="video_batchnorm"):
        MCNModel.from_reference_state_dict(plain.reference_state_dict(), config)
