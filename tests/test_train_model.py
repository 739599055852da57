"""MCN model: shapes, audio pooling, implementation variants, reference weights, parameter count."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mcn.errors import MCNError
from mcn.train.model import MCNModel, ModelConfig, reference, tiny

# A few names and shapes of the released MCN checkpoint (reference Net, D=6144, recon on, hidden 1024).
REFERENCE_KEYS = {
    "GU_video.fc.weight": (6144, 4096),
    "GU_video.cg.fc.weight": (6144, 6144),
    "GU_video.cg.fc.bias": (6144,),
    "DAVEnet.batchnorm1.running_var": (1,),
    "DAVEnet.conv1.weight": (128, 1, 40, 1),
    "DAVEnet.bn1.num_batches_tracked": (),
    "DAVEnet.layer1.0.conv1.weight": (128, 128, 1, 9),
    "DAVEnet.layer1.0.downsample.0.weight": (128, 128, 1, 1),
    "DAVEnet.layer2.0.downsample.1.running_mean": (256,),
    "DAVEnet.layer4.1.conv2.weight": (1024, 1024, 1, 9),
    "DAVEnet_projection.weight": (6144, 1024),
    "GU_audio.fc.weight": (1024, 1024),
    "GU_audio.cg.fc.weight": (1024, 1024),
    "text_pooling_caption.fc.weight": (6144, 300),
    "GU_text_captions.fc.weight": (6144, 6144),
    "recon_v.0.weight": (1024, 6144),
    "recon_v.2.weight": (4096, 1024),
    "recon_a.2.weight": (1024, 1024),
    "recon_t.2.weight": (6144, 1024),
}


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


def reference_forward_eval(
    sd: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The reference Net's eval-mode forward written directly on its state dict (no MCNModel code)."""

    def linear(prefix, x):
        return F.linear(x, sd[prefix + ".weight"], sd[prefix + ".bias"])

    def geu(prefix, x):
        x = linear(prefix + ".fc", x)
        return F.glu(torch.cat([x, linear(prefix + ".cg.fc", x)], dim=1), 1)

    def bn(prefix, x):
        return F.batch_norm(
            x,
            sd[prefix + ".running_mean"],
            sd[prefix + ".running_var"],
            sd[prefix + ".weight"],
            sd[prefix + ".bias"],
            False,
            0.0,
            1e-5,
        )

    x = F.conv2d(batch["audio"].unsqueeze(1), sd["DAVEnet.conv1.weight"])
    x = F.relu(bn("DAVEnet.bn1", x))
    stage = 1
    while f"DAVEnet.layer{stage}.0.conv1.weight" in sd:
        block = 0
        while (p := f"DAVEnet.layer{stage}.{block}") + ".conv1.weight" in sd:
            stride = 2 if block == 0 else 1
            out = F.relu(bn(p + ".bn1", F.conv2d(x, sd[p + ".conv1.weight"], stride=stride, padding=(0, 4))))
            out = bn(p + ".bn2", F.conv2d(out, sd[p + ".conv2.weight"], padding=(0, 4)))
            if p + ".downsample.0.weight" in sd:
                x = bn(p + ".downsample.1", F.conv2d(x, sd[p + ".downsample.0.weight"], stride=stride))
            x = F.relu(out + x)
            block += 1
        stage += 1
    feats = x.squeeze(2)
    ratio = round(batch["audio"].shape[-1] / feats.shape[-1])
    audio = torch.stack(
        [feats[i, :, : max(1, int(n) // ratio)].mean(dim=1) for i, n in enumerate(batch["nframes"])]
    )
    text = F.relu(linear("text_pooling_caption.fc", batch["text"])).max(dim=1).values
    return {
        "video": geu("GU_video", batch["video"]),
        "audio": linear("DAVEnet_projection", geu("GU_audio", audio)),
        "text": geu("GU_text_captions", text),
    }


def test_reference_checkpoint_loads_and_gives_identical_embeddings(tmp_path):
    model = trained_tiny()
    sd = model.reference_state_dict()
    assert "DAVEnet.batchnorm1.weight" in sd and "GU_video.cg.fc.weight" in sd
    path = tmp_path / "e9.pth"
    torch.save({"module." + k: v for k, v in sd.items()}, path)
    loaded = MCNModel.load_reference_checkpoint(path).eval()
    assert loaded.config == model.config  # sizes read back from the tensor shapes
    batch = make_batch(model.config, seed=5)
    expected = reference_forward_eval(sd, batch)
    ours, theirs = model(batch), loaded(batch)
    for name in expected:
        torch.testing.assert_close(theirs[name], ours[name], rtol=0, atol=0)
        torch.testing.assert_close(theirs[name], expected[name], rtol=1e-5, atol=1e-5)
    round_trip = loaded.reference_state_dict()
    assert round_trip.keys() == sd.keys()
    for key in sd:
        assert torch.equal(round_trip[key], sd[key]), key


def test_reference_checkpoint_errors(tmp_path):
    sd = trained_tiny().reference_state_dict()
    del sd["GU_audio.cg.fc.bias"]
    with pytest.raises(MCNError, match="missing"):
        MCNModel.from_reference_state_dict(sd, tiny())
    with pytest.raises(MCNError, match="does not exist"):
        MCNModel.load_reference_checkpoint(tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(MCNError, match="cannot read"):
        MCNModel.load_reference_checkpoint(tmp_path / "junk.pth")


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


def test_reference_size_parameter_count_and_checkpoint_layout():
    with torch.device("meta"):  # no memory: shapes only
        model = MCNModel(reference())
        sd = model.reference_state_dict()
    count = sum(p.numel() for p in model.parameters())
    assert count == expected_reference_parameter_count()
    assert abs(count - 224e6) < 1e6
    for key, shape in REFERENCE_KEYS.items():
        assert tuple(sd[key].shape) == shape, key


def test_config_validation():
    with pytest.raises(ValueError, match="audio_conv"):
        ModelConfig(audio_conv="3d")
    with pytest.raises(ValueError, match="equal length"):
        ModelConfig(audio_widths=(8, 16), audio_layers=(1,))
    with pytest.raises(ValueError, match="channels_last"):
        ModelConfig(audio_conv="1d", audio_channels_last=True)


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
