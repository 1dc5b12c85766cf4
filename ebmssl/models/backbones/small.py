"""Compact convolutional backbones for CPU training on small images (28x28 Fashion-MNIST, 8-32 px).

``small_resnet``: a 3x3 stem then one stage per width of ``blocks_per_stage`` basic residual blocks
(He et al. 2016; conv-BN-ReLU-conv-BN plus a projected shortcut when the shape changes), stride 2 at the
start of every stage after the first, then global average pooling. ``stem_stride: 2`` halves the
resolution in the stem (about 3x cheaper on 28x28 inputs) for quick CPU runs. ``small_cnn``: two conv-BN-ReLU
layers and global pooling, for fast tests.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

from ebmssl.registry import register_backbone


@register_backbone("small_resnet")
class SmallResNet(nn.Module):
    """Compact ResNet (3x3 stem, BasicBlocks, one stage per width, global average pool) for small images."""

    prefers_channels_last = True  # NHWC convolutions: train.channels_last "auto" turns it on

    def __init__(
        self,
        widths: list[int] = [32, 64, 128],  # noqa: B006  (never mutated)
        blocks_per_stage: int = 1,
        in_channels: int = 3,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths or min(widths) < 1 or blocks_per_stage < 1:
            raise ValueError(
                f"need at least one positive width and blocks_per_stage >= 1, got {widths}, {blocks_per_stage}"
            )
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        dim = widths[0]
        for index, width in enumerate(widths):
            blocks: list[nn.Module] = []
            for block_index in range(blocks_per_stage):
                stride = 2 if index > 0 and block_index == 0 else 1
                downsample = None
                if stride != 1 or dim != width:
                    downsample = nn.Sequential(conv1x1(dim, width, stride), nn.BatchNorm2d(width))
                blocks.append(BasicBlock(dim, width, stride=stride, downsample=downsample))
                dim = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.output_dim = dim
        self.in_channels = int(in_channels)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output (N, output_dim, h, w), before the global pool (dense features)."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_map(x)).flatten(1)


@register_backbone("small_cnn")
class SmallCNN(nn.Module):
    """Tiny conv net for tests: conv(width) -> conv(2 width, stride 2) -> global pool; 2 * width features."""

    prefers_channels_last = True  # NHWC convolutions: train.channels_last "auto" turns it on

    def __init__(self, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
        )
        self.output_dim = 2 * width
        self.in_channels = int(in_channels)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The second convolution's output (N, output_dim, h, w), before the global pool (dense features)."""
        return self.net[:-2](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
