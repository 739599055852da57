"""The two visual feature networks and their input preprocessing.

- 2D appearance: torchvision ResNet-152 (ImageNet) without avgpool/fc, then a global average pool -> (N, 2048).
- 3D motion: ResNeXt-101 32x4d 3D (Kinetics-400) as in the 3D-ResNets-PyTorch project, so that its public
  ``resnext-101-kinetics.pth`` (``{'state_dict': {'module.conv1.weight', ..., 'module.fc.weight'}}``) loads as it is
  with strict key matching. Its ``fc`` (400 classes) is kept only so the checkpoint matches; ``forward`` returns
  the pooled 2048-d features.

Every model is looked up by name in :data:`MODELS`; each full model has a tiny twin for CPU tests that runs the
same code and still produces 2048-d features. Without weights, models are initialised from a fixed seed (so
parallel workers agree) with every residual branch starting at zero, and a warning says the features carry no
semantics.

Shape legend: N batch, T frames, C channels, H/W height/width.
"""

from __future__ import annotations

import functools
import pickle
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet

from mcn.errors import MCNError
from mcn.extract.constants import CLIP_FRAMES, FEATURE_DIM  # noqa: F401 (visual.FEATURE_DIM: the output width)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (110.6, 103.2, 96.3)  # on the 0-255 scale; the std is 1
RANDOM_INIT_SEED = 0


# ----------------------------------------------------------------------------------------------- preprocessing
@functools.lru_cache(maxsize=8)
def _constants(name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalisation constants, made once per device: building them per batch would be a synchronous host-to-device
    copy that stalls the queue of asynchronous GPU work between batches."""
    if name == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32) * 255.0
        inv_std = 1.0 / (torch.tensor(IMAGENET_STD, dtype=torch.float32) * 255.0)
    else:
        mean, inv_std = torch.tensor(KINETICS_MEAN, dtype=torch.float32), torch.ones(3)
    return mean.to(device), inv_std.to(device)


def preprocess_2d(frames_NHWC: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 frames (N, H, W, 3) -> normalised (N, 3, H, W) in ``dtype``: /255, then ImageNet mean/std.

    The result is a permuted view of NHWC memory, i.e. already in ``channels_last`` layout.
    """
    if frames_NHWC.dtype != torch.uint8 or frames_NHWC.ndim != 4 or frames_NHWC.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 frames (N, H, W, 3), got {tuple(frames_NHWC.shape)} {frames_NHWC.dtype}"
        )
    mean, inv_std = _constants("imagenet", frames_NHWC.device)
    frames = (frames_NHWC.to(torch.float32) - mean) * inv_std
    return frames.permute(0, 3, 1, 2).to(dtype)


def pad_to_clips(frames_THWC: torch.Tensor) -> torch.Tensor:
    """Append black (zero) frames so the count is a multiple of 16 -> (N, 16, H, W, 3).

    As in the reference extractor, padding happens on raw pixels, before the mean is subtracted.
    """
    num_frames = frames_THWC.shape[0]
    num_pad = -num_frames % CLIP_FRAMES
    if num_pad:
        pad = frames_THWC.new_zeros((num_pad, *frames_THWC.shape[1:]))
        frames_THWC = torch.cat([frames_THWC, pad])
    return frames_THWC.reshape(-1, CLIP_FRAMES, *frames_THWC.shape[1:])


def preprocess_3d(frames_THWC: torch.Tensor) -> torch.Tensor:
    """uint8 frames (T, 112, 112, 3) -> clips (N, 3, 16, 112, 112) float32: zero-pad T to a multiple of 16,
    cut non-overlapping 16-frame clips, subtract the Kinetics mean (std 1, 0-255 scale)."""
    if frames_THWC.dtype != torch.uint8 or frames_THWC.ndim != 4 or frames_THWC.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 frames (T, H, W, 3), got {tuple(frames_THWC.shape)} {frames_THWC.dtype}"
        )
    return normalise_clips_3d(pad_to_clips(frames_THWC))


def normalise_clips_3d(clips_NTHWC: torch.Tensor) -> torch.Tensor:
    """uint8 clips (N, 16, H, W, 3) -> (N, 3, 16, H, W) float32 minus the Kinetics mean, contiguous."""
    mean, _ = _constants("kinetics", clips_NTHWC.device)
    clips = clips_NTHWC.to(torch.float32) - mean
    return clips.permute(0, 4, 1, 2, 3).contiguous()


# ---------------------------------------------------------------------------------------------- 2D: ResNet-152
class ResNetTrunk2D(nn.Module):
    """A torchvision ResNet without avgpool/fc, then a global average pool: (N, 3, H, W) -> (N, 2048)."""

    def __init__(self, resnet: tv_resnet.ResNet):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            resnet.layer1,
            resnet.layer2,
            resnet.layer3,
            resnet.layer4,
        )

    def forward(self, images_NCHW: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images_NCHW))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))


def _build_2d(
    layers: list[int], width_per_group: int, weights: str | None, download: bool, warn: bool
) -> nn.Module:
    if download:
        if weights is not None:
            raise MCNError("give either a ResNet-152 weights file or download=True, not both")
        # IMAGENET1K_V1 are the weights the released HowTo100M features were computed with.
        resnet = tv_resnet.resnet152(weights=tv_resnet.ResNet152_Weights.IMAGENET1K_V1)
        return ResNetTrunk2D(resnet).eval()
    state = _read_state_dict(weights) if weights is not None else None
    resnet = _instantiate(
        lambda: tv_resnet.ResNet(tv_resnet.Bottleneck, layers, width_per_group=width_per_group),
        state,
        weights,
    )
    if state is None and warn:
        warnings.warn(
            "ResNet-152 has no weights (random init): 2D features carry colour and layout only, no "
            "semantics. Give the torchvision ImageNet state-dict file (resnet152-*.pth) or allow download.",
            stacklevel=3,
        )
    return ResNetTrunk2D(resnet).eval()


def resnet152_2d(weights: str | None, download: bool = False) -> nn.Module:
    """ResNet-152 trunk + global average pool: normalised (N, 3, H, W) -> (N, 2048).

    ``weights``: a torchvision state-dict file (e.g. ``resnet152-b121ed2d.pth``); ``download=True`` lets torchvision
    fetch its ImageNet weights instead; neither gives a seeded random init with a warning.
    """
    return _build_2d([3, 8, 36, 3], 64, weights, download, warn=True)


def resnet152_2d_tiny(weights: str | None = None, download: bool = False) -> nn.Module:
    """Tiny twin of :func:`resnet152_2d` (one bottleneck per stage, narrow inner widths), still 2048-d out."""
    if download:
        raise MCNError("the tiny ResNet has no downloadable weights")
    return _build_2d([1, 1, 1, 1], 8, weights, False, warn=False)


# -------------------------------------------------------------------------------------- 3D: ResNeXt-101 32x4d
class ResNeXtBottleneck3D(nn.Module):
    """1x1x1 -> grouped 3x3x3 (stride) -> 1x1x1 bottleneck with output ``planes * 2`` and optional shortcut B."""

    expansion = 2

    def __init__(
        self,
        in_planes: int,
        planes: int,
        cardinality: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
    ):
        super().__init__()
        mid_planes = cardinality * (planes // 32)
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv3d(in_planes, mid_planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid_planes)
        self.conv2 = nn.Conv3d(
            mid_planes, mid_planes, 3, stride=stride, padding=1, groups=cardinality, bias=False
        )
        self.bn2 = nn.BatchNorm3d(mid_planes)
        self.conv3 = nn.Conv3d(mid_planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNeXt3D(nn.Module):
    """3D ResNeXt (shortcut type B). Module names follow 3D-ResNets-PyTorch so its checkpoints load as they are.

    (N, 3, 16, 112, 112) -> (N, widths[-1] * 2); ``fc`` is unused by ``forward`` (see :meth:`classify`).
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (3, 4, 23, 3),
        widths: tuple[int, int, int, int] = (128, 256, 512, 1024),
        stem_planes: int = 64,
        cardinality: int = 32,
        num_classes: int = 400,
    ):
        super().__init__()
        self.conv1 = nn.Conv3d(3, stem_planes, kernel_size=7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(stem_planes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        in_planes = stem_planes
        stages = []
        for index, (num_blocks, planes) in enumerate(zip(layers, widths, strict=True)):
            stride = 1 if index == 0 else 2
            out_planes = planes * ResNeXtBottleneck3D.expansion
            downsample = None
            if stride != 1 or in_planes != out_planes:
                downsample = nn.Sequential(
                    nn.Conv3d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm3d(out_planes),
                )
            blocks = [ResNeXtBottleneck3D(in_planes, planes, cardinality, stride, downsample)]
            blocks += [ResNeXtBottleneck3D(out_planes, planes, cardinality) for _ in range(num_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_planes = out_planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        # 16 frames x 112 px leave a 1 x 4 x 4 map after layer4.
        self.avgpool = nn.AvgPool3d((1, 4, 4), stride=1)
        self.fc = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")

    def forward(self, clips_NCTHW: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(clips_NCTHW))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def classify(self, clips_NCTHW: torch.Tensor) -> torch.Tensor:
        """Kinetics-400 logits (N, 400)."""
        return self.fc(self.forward(clips_NCTHW))


def load_kinetics_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a 3D-ResNets-PyTorch checkpoint with the DataParallel ``module.`` prefix removed."""
    checkpoint = _read_state_dict(path)
    state = checkpoint.get("state_dict", checkpoint)
    return {key.removeprefix("module."): value for key, value in state.items()}


def _build_3d(weights: str | None, warn: bool, **arch) -> ResNeXt3D:
    state = load_kinetics_state_dict(weights) if weights is not None else None
    model = _instantiate(lambda: ResNeXt3D(**arch), state, weights)
    if state is None and warn:
        warnings.warn(
            "ResNeXt-101 3D has no weights (random init): 3D features carry colour and layout only, no "
            "semantics. Give the Kinetics checkpoint resnext-101-kinetics.pth.",
            stacklevel=3,
        )
    return model.eval()


def resnext101_3d(weights: str | None) -> nn.Module:
    """ResNeXt-101 32x4d 3D: clips (N, 3, 16, 112, 112) -> (N, 2048); ``weights`` = ``resnext-101-kinetics.pth``."""
    return _build_3d(weights, warn=True)


def resnext101_3d_tiny(weights: str | None = None) -> nn.Module:
    """Tiny twin of :func:`resnext101_3d`: one block per stage, narrow early stages, still 2048-d out."""
    return _build_3d(weights, warn=False, layers=(1, 1, 1, 1), widths=(32, 32, 64, 1024), stem_planes=8)


def _instantiate(build: Callable[[], nn.Module], state: dict | None, path: str | Path | None) -> nn.Module:
    """Build a model from a seeded random init (``state`` None), or straight from ``state`` with strict key
    matching (built on the meta device, so no time goes into an init that the weights replace)."""
    if state is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = build()
        _zero_init_residual_branches(model)
        return model
    with torch.device("meta"):
        model = build()
    try:
        # Checkpoints from before PyTorch 0.4 lack BatchNorm's num_batches_tracked; BatchNorm fills it in itself.
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        detail = str(error).split("\n\t")[1] if "\n\t" in str(error) else str(error)
        raise MCNError(
            f"weights file {path} does not fit {type(model).__name__}: {detail.strip()[:300]}"
        ) from error
    return model


def _zero_init_residual_branches(model: nn.Module) -> None:
    """Start every residual branch at zero (the last BatchNorm's scale = 0, as torchvision's
    ``zero_init_residual``), so a randomly initialised deep network passes its input's structure through the
    shortcuts instead of collapsing every frame onto one direction: with the default init, ResNet-152 features of
    different frames have cosine similarity > 0.999; with this one, about 0.8-0.9. Only used without weights."""
    for module in model.modules():
        last_norm = getattr(module, "bn3", None)
        if isinstance(last_norm, nn.modules.batchnorm._BatchNorm):
            nn.init.zeros_(last_norm.weight)


def _read_state_dict(path: str | Path) -> dict:
    """A checkpoint's tensors, loaded safely (tensors and plain containers only; nothing in it can run code).

    A missing, damaged or unsafe file is a one-line :class:`MCNError` that says which of these it is.
    """
    path = Path(path)
    if not path.exists():
        raise MCNError(f"weights file not found: {path}")
    if not path.is_file():
        raise MCNError(f"weights file {path} is not a regular file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = _UNSAFE_GLOBAL.search(str(error))
        if found:
            raise MCNError(
                f"weights file {path} is refused: it is not a plain tensor checkpoint (it asks for "
                f"{found.group(0).split()[-1]}, which could run code); give a state-dict file saved with "
                "torch.save(model.state_dict(), ...)"
            ) from None
        raise MCNError(f"cannot read weights file {path}: not a PyTorch checkpoint") from None
    except EOFError:
        raise MCNError(f"cannot read weights file {path}: empty or truncated") from None
    except (
        RuntimeError,
        OSError,
        ValueError,
    ) as error:  # torch reports a damaged zip archive as RuntimeError
        first = (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0][:200]
        raise MCNError(f"cannot read weights file {path}: damaged or truncated ({first})") from None
    if not isinstance(state, dict):
        raise MCNError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return state


_UNSAFE_GLOBAL = re.compile(r"unsupported GLOBAL \S+|Unsupported global: GLOBAL \S+", re.IGNORECASE)


def check_weights(name: str, weights: str | None) -> None:
    """Load ``weights`` into the registered model ``name`` once, so that a missing, damaged, unsafe or
    mismatched file is a one-line :class:`MCNError` before a job records the file's fingerprint."""
    if weights is None:
        return
    try:
        build_model(name, weights)
    except (TypeError, AttributeError, KeyError, IndexError) as error:  # a dict of other things than tensors
        raise MCNError(
            f"weights file {weights} does not fit {name}: {type(error).__name__}: {error}"
        ) from None


# ------------------------------------------------------------------------------------------------- registry
ModelBuilder = Callable[[str | None, bool], nn.Module]

# name -> (kind, builder(weights, download)). kind "2d" takes frames, "3d" takes 16-frame clips.
MODELS: dict[str, tuple[str, ModelBuilder]] = {
    "resnet152": ("2d", resnet152_2d),
    "resnet152-tiny": ("2d", resnet152_2d_tiny),
    "resnext101": ("3d", lambda weights, download=False: _no_download(resnext101_3d, weights, download)),
    "resnext101-tiny": (
        "3d",
        lambda weights, download=False: _no_download(resnext101_3d_tiny, weights, download),
    ),
}


def _no_download(
    builder: Callable[[str | None], nn.Module], weights: str | None, download: bool
) -> nn.Module:
    if download:
        raise MCNError(
            "3D ResNeXt weights cannot be downloaded here: give the path of resnext-101-kinetics.pth"
        )
    return builder(weights)


def model_kind(name: str) -> str:
    """ "2d" or "3d" for a registered model name."""
    if name not in MODELS:
        raise MCNError(f"unknown visual model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name][0]


def build_model(name: str, weights: str | None = None, download: bool = False) -> nn.Module:
    """Build a registered visual model (in eval mode, on the CPU)."""
    model_kind(name)
    return MODELS[name][1](weights, download)


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm that directly follows a conv into that conv (in place; inference only).

    Convs and BatchNorms are paired by attribute order (``conv1``/``bn1``, ``downsample.0``/``downsample.1``).
    """
    fuse = torch.nn.utils.fusion.fuse_conv_bn_eval
    for module in list(model.modules()):
        children = list(module.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:], strict=False):
            if isinstance(conv, (nn.Conv2d, nn.Conv3d)) and isinstance(bn, (nn.BatchNorm2d, nn.BatchNorm3d)):
                setattr(module, conv_name, fuse(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return model


def l2_normalise(feats_ND: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (in float32)."""
    return F.normalize(feats_ND.float(), dim=1)
