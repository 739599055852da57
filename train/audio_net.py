"""ResDAVEnet: the residual 1-D convolutional audio trunk of MCN (after Harwath et al.'s DAVEnet).

Input log-mel (B, F, T) -> stem conv over all F mel bins (kernel (F, 1)) -> BN -> ReLU -> stages of basic
residual blocks with (1, k) kernels, the first block of every stage striding by 2 with a 1x1 conv + BN
shortcut -> (B, C, S) with S = ceil(T / 2**num_stages).

After the stem the frequency axis has size 1, so every (1, k) Conv2d is a Conv1d. ``conv="2d"`` keeps the
reference's 4-D weights (and allows channels_last); ``conv="1d"`` stores 3-D weights. The reference's unused
input ``batchnorm1`` is not built; `mcn.train.reference_weights` drops and restores it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _conv(conv: str, in_ch: int, out_ch: int, kernel: int, stride: int) -> nn.Module:
    if conv == "2d":
        return nn.Conv2d(in_ch, out_ch, (1, kernel), stride=(1, stride), padding=(0, kernel // 2), bias=False)
    return nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False)


def _norm(conv: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if conv == "2d" else nn.BatchNorm1d(channels)


class BasicBlock(nn.Module):
    """Two (1, k) convolutions with BN, ReLU and a residual connection."""

    def __init__(self, conv: str, in_ch: int, out_ch: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv(conv, in_ch, out_ch, kernel, stride)
        self.bn1 = _norm(conv, out_ch)
        self.conv2 = _conv(conv, out_ch, out_ch, kernel, 1)
        self.bn2 = _norm(conv, out_ch)
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(_conv(conv, in_ch, out_ch, 1, stride), _norm(conv, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return F.relu(out, inplace=True)


class ResDAVEnet(nn.Module):
    """Audio trunk; ``stages[i][j]`` is block j of stage i (the reference's ``layer{i+1}.{j}``)."""

    def __init__(
        self,
        mel_bins: int = 40,
        widths: tuple[int, ...] = (128, 256, 512, 1024),
        layers: tuple[int, ...] = (2, 2, 2, 2),
        kernel: int = 9,
        conv: str = "2d",
        stem_matmul: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.conv = conv
        self.stem_matmul = stem_matmul
        self.channels_last = channels_last
        self.mel_bins = mel_bins
        stem_channels = widths[0]
        if conv == "2d":
            self.stem_conv = nn.Conv2d(1, stem_channels, (mel_bins, 1), bias=False)
        else:
            self.stem_conv = nn.Conv1d(mel_bins, stem_channels, 1, bias=False)
        self.stem_bn = _norm(conv, stem_channels)
        stages = []
        in_ch = stem_channels
        for width, num_blocks in zip(widths, layers):
            blocks = [BasicBlock(conv, in_ch, width, kernel, 2)]
            blocks += [BasicBlock(conv, width, width, kernel, 1) for _ in range(num_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = width
        self.stages = nn.Sequential(*stages)
        self.out_channels = in_ch
        for module in self.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d)):
                # The reference's init: N(0, 2/n), n = kernel area (as a 2-D kernel) x output channels.
                kernel_area = mel_bins if module is self.stem_conv else module.kernel_size[-1]
                n = kernel_area * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / n))
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def stem(self, logmel_BFT: torch.Tensor) -> torch.Tensor:
        if self.stem_matmul:
            # One (B*T, F) x (F, C) product; written as (B, T, C) it already is the channels-last layout.
            weight_CF = self.stem_conv.weight.reshape(self.stem_conv.out_channels, self.mel_bins)
            out_BTC = torch.matmul(logmel_BFT.transpose(1, 2), weight_CF.t())
            out = out_BTC.permute(0, 2, 1)
            return out.unsqueeze(2) if self.conv == "2d" else out.contiguous()
        if self.conv == "2d":
            x = logmel_BFT.unsqueeze(1)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.stem_conv(x)
        return self.stem_conv(logmel_BFT)

    def forward(self, logmel_BFT: torch.Tensor) -> torch.Tensor:
        """(B, F, T) log-mel -> (B, C, S) features."""
        if logmel_BFT.shape[1] != self.mel_bins:
            raise ValueError(f"audio input must be (B, {self.mel_bins}, T), got {tuple(logmel_BFT.shape)}")
        x = F.relu(self.stem_bn(self.stem(logmel_BFT)), inplace=True)
        x = self.stages(x)
        return x.squeeze(2) if self.conv == "2d" else x
