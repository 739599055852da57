"""Reference weights: the name and shape mapping, sizes read from shapes, reading released .pth files safely."""

from __future__ import annotations

import os
import pickle
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from test_train_model import make_batch, trained_tiny

from mcn.errors import MCNError
from mcn.train.model import MCNModel, ModelConfig, reference, tiny
from mcn.train.reference_weights import (
    from_reference,
    read_reference_checkpoint,
    reference_name,
    reference_sizes,
    strip_prefixes,
    to_reference,
)

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


def test_reference_names_of_each_kind_of_parameter():
    assert reference_name("video_gate.linear.weight") == "GU_video.fc.weight"
    assert reference_name("text_gate.gating.linear.bias") == "GU_text_captions.cg.fc.bias"
    assert reference_name("word_projection.weight") == "text_pooling_caption.fc.weight"
    assert reference_name("audio_net.stem_bn.running_mean") == "DAVEnet.bn1.running_mean"
    assert reference_name("audio_net.stages.2.0.shortcut.1.weight") == "DAVEnet.layer3.0.downsample.1.weight"
    assert reference_name("video_decoder.2.bias") == "recon_v.2.bias"
    with pytest.raises(KeyError, match="video_norm"):
        reference_name("video_norm.running_mean")


def test_mapping_round_trips_and_conv1d_weights_gain_the_frequency_axis():
    model = MCNModel(replace(tiny(), audio_conv="1d"))
    ours = model.state_dict()
    theirs = to_reference(ours)
    assert theirs["DAVEnet.conv1.weight"].shape == (8, 1, 40, 1)  # ours: Conv1d (8, 40, 1)
    assert theirs["DAVEnet.layer1.0.conv1.weight"].shape == (8, 8, 1, 9)
    assert "DAVEnet.batchnorm1.running_var" in theirs  # the reference's unused BatchNorm is written back
    back = from_reference(theirs, ours)
    assert back.keys() == ours.keys()
    for name, tensor in ours.items():
        assert torch.equal(back[name], tensor), name


def test_mapping_refuses_mismatched_sizes():
    theirs = to_reference(MCNModel(tiny()).state_dict())
    wider = MCNModel(replace(tiny(), embed_dim=32)).state_dict()
    with pytest.raises(MCNError, match="shape"):
        from_reference(theirs, wider)


def test_sizes_are_read_back_from_the_shapes():
    config = replace(tiny(), audio_layers=(2, 1, 1, 2), recon_hidden=10)
    assert ModelConfig(**reference_sizes(MCNModel(config).reference_state_dict())) == config
    no_recon = replace(tiny(), reconstruction=False)
    assert reference_sizes(MCNModel(no_recon).reference_state_dict())["reconstruction"] is False
    with pytest.raises(MCNError, match="tri-modal"):
        reference_sizes({"GU_video.fc.weight": torch.zeros(4, 4)})


def test_module_prefixes_are_stripped():
    assert list(strip_prefixes({"module.module.a.b": 1, "c": 2})) == ["a.b", "c"]


def test_reference_size_checkpoint_layout():
    with torch.device("meta"):  # no memory: shapes only
        sd = MCNModel(reference()).reference_state_dict()
    for key, shape in REFERENCE_KEYS.items():
        assert tuple(sd[key].shape) == shape, key


def test_reference_checkpoint_errors(tmp_path):
    sd = trained_tiny().reference_state_dict()
    del sd["GU_audio.cg.fc.bias"]
    with pytest.raises(MCNError, match="missing"):
        MCNModel.from_reference_state_dict(sd, tiny())
    with pytest.raises(MCNError, match="does not exist"):
        MCNModel.load_reference_checkpoint(tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(MCNError, match="not a safe load"):
        MCNModel.load_reference_checkpoint(tmp_path / "junk.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(MCNError, match="plain state dict"):
        read_reference_checkpoint(tmp_path / "list.pth")
    good = tmp_path / "good.pth"
    torch.save({"net": trained_tiny().reference_state_dict()}, good)  # a state dict under "net" is accepted
    assert "GU_video.fc.weight" in read_reference_checkpoint(good)
    torn = tmp_path / "torn.pth"
    torn.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(MCNError, match="cannot read .*torn.pth: truncated"):
        read_reference_checkpoint(torn)


class _RunsCode:
    """Unpickling this runs a shell command (an evil checkpoint)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_an_evil_released_checkpoint_is_refused_in_one_line_without_running(tmp_path, writer):
    marker = tmp_path / "code-ran"
    state = {**trained_tiny().reference_state_dict(), "GU_video.fc.weight": _RunsCode(str(marker))}
    path = tmp_path / "MCN_release.pth"
    if writer == "torch.save":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state, protocol=4))
    with pytest.raises(MCNError) as error:
        MCNModel.load_reference_checkpoint(path)
    message = str(error.value)
    assert "not a safe load" in message and str(path) in message
    assert "\n" not in message and "weights_only" not in message
    assert (
        error.value.__cause__ is None and error.value.__suppress_context__
    )  # torch's message is not chained
    assert not marker.exists()
