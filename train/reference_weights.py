"""Exact mapping between `MCNModel` parameters and the reference MCN checkpoint's names and shapes.

The released checkpoint is a plain state dict of the reference's ``Net`` (``model_kmeans_ICCV.py``):
``GU_video.fc.weight``, ``GU_video.cg.fc.weight``, ``DAVEnet.conv1.weight`` (C, 1, 40, 1),
``DAVEnet.layer1.0.conv1.weight`` (C, C, 1, 9), ``DAVEnet.layer1.0.downsample.0.weight``, ``GU_audio.*``,
``DAVEnet_projection.*``, ``text_pooling_caption.fc.*``, ``GU_text_captions.*``, ``recon_{v,a,t}.{0,2}.*``.
It also holds ``DAVEnet.batchnorm1.*``, a BatchNorm the reference defines but never calls: it is dropped on
load and written back with its untouched initial values.

The mapping works on state dicts alone (it sits below `mcn.train.model`, which calls it); the sizes read from a
reference state dict come back as `ModelConfig` keyword arguments (:func:`reference_sizes`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from mcn.errors import MCNError
from mcn.train.tensor_files import load_tensor_file

_PREFIXES = (
    ("video_gate.", "GU_video."),
    ("audio_gate.", "GU_audio."),
    ("text_gate.", "GU_text_captions."),
    ("audio_projection.", "DAVEnet_projection."),
    ("word_projection.", "text_pooling_caption.fc."),
    ("video_decoder.", "recon_v."),
    ("audio_decoder.", "recon_a."),
    ("text_decoder.", "recon_t."),
    ("audio_net.stem_conv.", "DAVEnet.conv1."),
    ("audio_net.stem_bn.", "DAVEnet.bn1."),
)
_GATE_PREFIXES = ("video_gate.", "audio_gate.", "text_gate.")
_STAGE = re.compile(r"^audio_net\.stages\.(\d+)\.(\d+)\.(.*)$")
_UNUSED_INPUT_BN = {
    "DAVEnet.batchnorm1.weight": torch.ones(1),
    "DAVEnet.batchnorm1.bias": torch.zeros(1),
    "DAVEnet.batchnorm1.running_mean": torch.zeros(1),
    "DAVEnet.batchnorm1.running_var": torch.ones(1),
    "DAVEnet.batchnorm1.num_batches_tracked": torch.tensor(0),
}


def reference_name(name: str) -> str:
    """The reference's name for one of our state-dict keys."""
    stage = _STAGE.match(name)
    if stage:
        rest = stage.group(3).replace("shortcut.", "downsample.")
        return f"DAVEnet.layer{int(stage.group(1)) + 1}.{stage.group(2)}.{rest}"
    for ours, theirs in _PREFIXES:
        if name.startswith(ours):
            rest = name[len(ours) :]
            if ours in _GATE_PREFIXES:
                rest = (
                    rest.replace("gating.linear.", "cg.fc.")
                    if rest.startswith("gating.")
                    else "fc." + rest[7:]
                )
            return theirs + rest
    raise KeyError(f"no reference name for parameter {name!r}")


def _reference_shape(name: str, shape: torch.Size) -> tuple[int, ...]:
    """Conv weights are 4-D in the reference; 3-D (Conv1d) weights gain the unit frequency axis."""
    if len(shape) != 3:
        return tuple(shape)
    if name == "DAVEnet.conv1.weight":
        return (shape[0], 1, shape[1], 1)
    return (shape[0], shape[1], 1, shape[2])


def to_reference(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (and for Conv1d weights reshape) our state dict into the reference's layout."""
    out = {}
    for name, tensor in state_dict.items():
        ref = reference_name(name)
        out[ref] = tensor.detach().reshape(_reference_shape(ref, tensor.shape)).contiguous().clone()
    out.update({k: v.clone() for k, v in _UNUSED_INPUT_BN.items()})
    return out


def from_reference(
    state_dict: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The inverse of :func:`to_reference`: ``state_dict`` under the names and shapes of ``target`` (the state
    dict of the model to fill); raises MCNError on any mismatch."""
    wanted = {reference_name(name): name for name in target}
    given = {k: v for k, v in state_dict.items() if k not in _UNUSED_INPUT_BN}
    missing = sorted(set(wanted) - set(given))
    unexpected = sorted(set(given) - set(wanted))
    if missing or unexpected:
        raise MCNError(
            f"checkpoint does not match the MCN model: missing {missing[:5]} ({len(missing)}), unexpected "
            f"{unexpected[:5]} ({len(unexpected)}); is it the tri-modal MCN model with the same reconstruction setting?"
        )
    out = {}
    for ref, name in wanted.items():
        tensor, shape = given[ref], target[name].shape
        if tensor.numel() != shape.numel() or tuple(tensor.shape) != _reference_shape(ref, shape):
            raise MCNError(
                f"checkpoint tensor {ref} has shape {tuple(tensor.shape)}, the model expects "
                f"{_reference_shape(ref, shape)}; pass a ModelConfig with matching sizes"
            )
        out[name] = tensor.reshape(shape)
    return out


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DataParallel/DDP ``module.`` prefixes."""
    out = {}
    for key, value in state_dict.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        out[key] = value
    return out


def reference_sizes(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The `ModelConfig` keyword arguments whose sizes match a reference state dict."""
    required = (
        "GU_video.fc.weight",
        "text_pooling_caption.fc.weight",
        "DAVEnet.conv1.weight",
        "GU_audio.fc.weight",
    )
    absent = [k for k in required if k not in state_dict]
    if absent:
        raise MCNError(f"not a tri-modal MCN checkpoint: keys {absent} are missing")
    embed_dim, video_dim = state_dict["GU_video.fc.weight"].shape
    stem = state_dict["DAVEnet.conv1.weight"]
    blocks: dict[int, set[int]] = {}
    for key in state_dict:
        found = re.match(r"^DAVEnet\.layer(\d+)\.(\d+)\.", key)
        if found:
            blocks.setdefault(int(found.group(1)), set()).add(int(found.group(2)))
    stages = sorted(blocks)
    widths = tuple(int(state_dict[f"DAVEnet.layer{i}.0.conv1.weight"].shape[0]) for i in stages)
    if not stages or widths[0] != stem.shape[0]:
        raise MCNError(
            "unsupported audio trunk in checkpoint: the stem width must equal the first stage's width"
        )
    recon = "recon_v.0.weight" in state_dict
    return dict(
        embed_dim=int(embed_dim),
        video_dim=int(video_dim),
        word_dim=int(state_dict["text_pooling_caption.fc.weight"].shape[1]),
        audio_mel_bins=int(stem.shape[-2] if stem.dim() == 4 else stem.shape[1]),
        audio_widths=widths,
        audio_layers=tuple(len(blocks[i]) for i in stages),
        audio_kernel=int(state_dict["DAVEnet.layer1.0.conv1.weight"].shape[-1]),
        recon_hidden=int(state_dict["recon_v.0.weight"].shape[0]) if recon else 1024,
        reconstruction=recon,
    )


def read_reference_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a reference ``.pth`` safely (tensors only); accepts a bare state dict or one under "net"."""
    path = Path(path)
    if not path.is_file():
        raise MCNError(f"reference checkpoint {path} does not exist")
    data = load_tensor_file(path)
    if isinstance(data, dict) and isinstance(data.get("net"), dict):
        data = data["net"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise MCNError(f"{path} is not a plain state dict of tensors")
    return strip_prefixes(data)
