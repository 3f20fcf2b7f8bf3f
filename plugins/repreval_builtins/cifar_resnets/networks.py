"""The networks of the ``cifar`` model source: ResNets for 32×32 inputs with option-A shortcuts.

Imported by :meth:`CifarResNets.build <repreval_builtins.cifar_resnets.CifarResNets.build>` only, so that
registering the source (``repreval list``, ``repreval plugins``) does not import torch.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ChannelPadShortcut(nn.Module):
    """Option A shortcut: keep every second pixel and zero-pad the channels on both sides."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra_channels = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        half = self.extra_channels // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, half, self.extra_channels - half))


class BasicBlock(nn.Module):
    """conv3×3 (``stride``) -> BN -> ReLU -> conv3×3 -> BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != channels:
            self.shortcut = ChannelPadShortcut(channels - in_channels)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))  # no in-place ops: probes and torch.func read these tensors


class CifarResNet(nn.Module):
    """conv3×3 -> three stages of ``blocks_per_stage`` basic blocks (16/32/64 channels) -> global average pool
    -> linear; the forward returns logits [B, num_classes]."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks_per_stage, stride=1)
        self.layer2 = self._stage(16, 32, blocks_per_stage, stride=2)
        self.layer3 = self._stage(32, 64, blocks_per_stage, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():  # the original's initialisation (BatchNorm keeps its defaults)
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    @staticmethod
    def _stage(in_channels: int, channels: int, blocks: int, stride: int) -> nn.Sequential:
        first = BasicBlock(in_channels, channels, stride)
        return nn.Sequential(first, *(BasicBlock(channels, channels, 1) for _ in range(blocks - 1)))

    def forward_features(self, x: Tensor) -> Tensor:
        """Globally average-pooled output of the last stage, [B, 64]."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.avgpool(out).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.forward_features(x))
