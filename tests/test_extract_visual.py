"""2D/3D networks and extractors: preprocessing values, shapes, L2 norm, fp16, real checkpoint formats, tiny twins."""

import numpy as np
import pytest
import torch
import torchvision

from mcn.errors import MCNError
from mcn.extract import visual
from mcn.extract.extractors import EXTRACTORS, Clip3DExtractor, Frame2DExtractor, build_extractor


def perturbed_state_dict(model: torch.nn.Module) -> dict:
    """A state dict that differs from the seeded init (cheap to make), with positive BatchNorm variances."""
    state = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            ramp = torch.linspace(-0.02, 0.02, value.numel()).view_as(value)
            # Large variances keep activations finite through 50 random residual blocks.
            value = value.abs() + 4.0 + ramp if key.endswith("running_var") else value.flip(0) * 0.9 + ramp
        state[key] = value.clone()
    return state


def frames(num: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num, height, width, 3), dtype=np.uint8)


def test_preprocess_2d_normalises_with_imagenet_stats_into_nchw():
    frames_NHWC = torch.zeros((2, 5, 7, 3), dtype=torch.uint8)
    frames_NHWC[1, 2, 3] = torch.tensor([255, 128, 0], dtype=torch.uint8)
    images = visual.preprocess_2d(frames_NHWC)
    assert images.shape == (2, 3, 5, 7) and images.dtype == torch.float32
    assert images.is_contiguous(memory_format=torch.channels_last)
    mean, std = np.array(visual.IMAGENET_MEAN), np.array(visual.IMAGENET_STD)
    np.testing.assert_allclose(images[0, :, 0, 0].numpy(), -mean / std, rtol=1e-5)
    np.testing.assert_allclose(
        images[1, :, 2, 3].numpy(), (np.array([255, 128, 0]) / 255 - mean) / std, rtol=1e-5
    )
    with pytest.raises(ValueError, match="uint8"):
        visual.preprocess_2d(frames_NHWC.float())


def test_preprocess_3d_pads_raw_frames_then_subtracts_the_mean():
    frames_THWC = torch.full((20, 112, 112, 3), 200, dtype=torch.uint8)
    clips = visual.preprocess_3d(frames_THWC)
    assert clips.shape == (2, 3, 16, 112, 112) and clips.is_contiguous()
    mean = torch.tensor(visual.KINETICS_MEAN)
    torch.testing.assert_close(clips[1, :, 3, 10, 10], 200 - mean)  # frame 19: real
    torch.testing.assert_close(clips[1, :, 4, 10, 10], -mean)  # frame 20: black padding, as the reference
    assert visual.preprocess_3d(frames_THWC[:16]).shape[0] == 1


def test_registry_has_each_model_and_its_tiny_twin():
    assert {"resnet152", "resnet152-tiny", "resnext101", "resnext101-tiny"} <= set(visual.MODELS)
    assert visual.model_kind("resnet152-tiny") == "2d" and visual.model_kind("resnext101-tiny") == "3d"
    with pytest.raises(MCNError, match="unknown visual model"):
        visual.build_model("resnet9000")
    with torch.inference_mode():
        out_2d = visual.build_model("resnet152-tiny")(torch.randn(2, 3, 64, 96))
        out_3d = visual.build_model("resnext101-tiny")(torch.randn(2, 3, 16, 112, 112))
    assert out_2d.shape == (2, visual.FEATURE_DIM) and out_3d.shape == (2, visual.FEATURE_DIM)


@pytest.mark.slow
def test_resnext101_loads_the_kinetics_checkpoint_format_as_it_is(tmp_path):
    with pytest.warns(UserWarning, match="random init"):
        source = visual.resnext101_3d(None)  # the full ResNeXt-101 32x4d
    assert source.fc.out_features == 400
    source.load_state_dict(perturbed_state_dict(source))
    # The public file was saved from a DataParallel model before PyTorch 0.4: 'module.' keys, no num_batches_tracked.
    state = {
        f"module.{k}": v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    assert "module.fc.weight" in state and "module.layer3.22.conv2.weight" in state
    path = tmp_path / "resnext-101-kinetics.pth"
    torch.save({"arch": "resnext-101", "epoch": 1, "state_dict": state}, path)

    loaded = visual.resnext101_3d(str(path))
    for key, value in source.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(loaded.state_dict()[key], value), key
    clip = torch.randn(1, 3, 16, 112, 112)
    with torch.inference_mode():
        assert torch.equal(loaded(clip), source(clip))
        assert loaded.classify(clip).shape == (1, 400)


@pytest.mark.slow
def test_resnet152_loads_a_torchvision_state_dict_file(tmp_path):
    reference = torchvision.models.resnet152().eval()
    reference.load_state_dict(perturbed_state_dict(reference))
    path = tmp_path / "resnet152-b121ed2d.pth"
    torch.save(reference.state_dict(), path)

    loaded = visual.resnet152_2d(str(path))
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key]), key
    reference.fc = torch.nn.Identity()  # torchvision's own avgpool + flatten = the features
    image = torch.randn(1, 3, 64, 80)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(image), reference(image))


def test_a_checkpoint_of_another_model_is_an_actionable_error(tmp_path):
    state = visual.build_model("resnext101-tiny").state_dict()
    path = tmp_path / "wrong.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    with pytest.raises(MCNError, match="does not fit ResNeXt3D"):
        visual.resnext101_3d(str(path))
    with pytest.raises(MCNError, match="not found"):
        visual.resnext101_3d(str(tmp_path / "missing.pth"))
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(MCNError, match="cannot read"):
        visual.resnext101_3d(str(tmp_path / "broken.pth"))


def test_fused_batchnorm_gives_the_same_features():
    model = visual.build_model("resnext101-tiny")
    model.load_state_dict(perturbed_state_dict(model))
    clips = torch.randn(2, 3, 16, 112, 112)
    with torch.inference_mode():
        expected = model(clips)
        fused = visual.fuse_batchnorm(model)
        assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in fused.modules())
        torch.testing.assert_close(fused(clips), expected, rtol=1e-4, atol=1e-4)


def assert_unit_fp16_rows(feats, num_rows):
    assert feats.dtype == np.float16 and feats.shape == (num_rows, visual.FEATURE_DIM)
    np.testing.assert_allclose(np.linalg.norm(feats.astype(np.float32), axis=1), 1.0, atol=2e-3)


def test_frame_2d_extractor_batches_across_items_and_records_bad_ones():
    extractor = Frame2DExtractor("resnet152-tiny", device="cpu", batch_size=3)
    a, b, c = frames(4, 64, 96, seed=1), frames(3, 64, 80, seed=2), frames(2, 64, 96, seed=3)
    result = extractor([a, np.zeros((2, 64, 96), np.uint8), b, c, frames(0, 64, 96)])
    assert set(result.failures) == {1} and "uint8 frames (T, H, W, 3)" in result.failures[1]
    assert result.outputs[1] is None
    for index, num in [(0, 4), (2, 3), (3, 2), (4, 0)]:
        assert_unit_fp16_rows(result.outputs[index], num)
    alone = Frame2DExtractor("resnet152-tiny", device="cpu", batch_size=16)([c]).only()  # same seeded weights
    np.testing.assert_allclose(alone.astype(np.float32), result.outputs[3].astype(np.float32), atol=2e-3)
    with torch.inference_mode():
        direct = visual.l2_normalise(extractor.model(visual.preprocess_2d(torch.from_numpy(a)))).numpy()
    np.testing.assert_allclose(result.outputs[0].astype(np.float32), direct, atol=2e-3)


def test_clip_3d_extractor_pads_each_item_to_whole_clips():
    extractor = build_extractor("clip3d", model="resnext101-tiny", device="cpu", batch_size=2)
    a, b = frames(20, 112, 112, seed=4), frames(16, 112, 112, seed=5)
    result = extractor([a, frames(16, 100, 112), b])
    assert set(result.failures) == {1}
    assert_unit_fp16_rows(result.outputs[0], 2)
    assert_unit_fp16_rows(result.outputs[2], 1)
    with torch.inference_mode():
        direct = visual.l2_normalise(extractor.model(visual.preprocess_3d(torch.from_numpy(a)))).numpy()
    np.testing.assert_allclose(result.outputs[0].astype(np.float32), direct, atol=2e-3)
    with pytest.raises(RuntimeError, match="112, 112, 3"):
        extractor([frames(16, 64, 64)]).only()


def test_extractor_registry_and_argument_checks():
    assert {"frame2d", "clip3d", "logmel", "captions"} <= set(EXTRACTORS)
    with pytest.raises(ValueError, match="not a 2d model"):
        Frame2DExtractor("resnext101-tiny", device="cpu")
    with pytest.raises(ValueError, match="unknown extractor"):
        build_extractor("optical-flow")
    assert isinstance(build_extractor("clip3d", model="resnext101-tiny", device="cpu"), Clip3DExtractor)


def test_row_batches_cut_parts_into_full_batches_in_order():
    from mcn.extract.extractors import _row_batches

    batches = list(_row_batches([4, 0, 3, 2], batch_size=3))
    assert batches == [[(0, 0, 3)], [(0, 3, 4), (2, 0, 2)], [(2, 2, 3), (3, 0, 2)]]
    rows = [(part, row) for pieces in batches for part, a, b in pieces for row in range(a, b)]
    assert rows == [(p, r) for p, n in enumerate([4, 0, 3, 2]) for r in range(n)]
    assert list(_row_batches([0, 0], batch_size=3)) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_staged_batches_match_the_cpu_features():
    items = [frames(5, 64, 96, seed=6), frames(1, 64, 96, seed=7), frames(4, 64, 96, seed=8)]
    cpu = Frame2DExtractor("resnet152-tiny", device="cpu", batch_size=3)(items)
    gpu = Frame2DExtractor("resnet152-tiny", device="cuda", batch_size=3, precision="fp32")(items)
    for a, b in zip(cpu.outputs, gpu.outputs, strict=True):
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=1e-2)
