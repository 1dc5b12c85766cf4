"""torchvision ResNets as backbones (He et al. 2016), optionally with the CIFAR stem.

The network is torchvision's ``ResNet`` itself with ``fc`` replaced by ``nn.Identity``, so its
``state_dict()`` keys are torchvision's (a plain ``torchvision.models.resnet18()`` loads it with
``strict=False``, missing only ``fc.weight``/``fc.bias``). ``small_images=True`` uses the stem of the
SimCLR CIFAR experiments: a 3x3 stride-1 ``conv1`` and no max-pool (its ``conv1.weight`` then has a
3x3 shape, so it only loads into a ResNet with the same stem).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from ebmssl.registry import register_backbone


class ResNetBackbone(tv_resnet.ResNet):
    """torchvision ResNet without the classifier: images (N, C, H, W) -> pooled features (N, 512 or 2048)."""

    prefers_channels_last = True  # NHWC convolutions: train.channels_last "auto" turns it on

    def __init__(
        self,
        block: type[tv_resnet.BasicBlock] | type[tv_resnet.Bottleneck],
        layers: list[int],
        in_channels: int = 3,
        small_images: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__(block, layers, zero_init_residual=zero_init_residual)
        self.output_dim = int(self.fc.in_features)
        self.fc = nn.Identity()
        if small_images or in_channels != 3:
            kernel, stride, padding = (3, 1, 1) if small_images else (7, 2, 3)
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=kernel, stride=stride, padding=padding, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        if small_images:
            self.maxpool = nn.Identity()
        self.in_channels = int(in_channels)
        self.small_images = small_images

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``layer4``'s output (N, output_dim, h, w), before the global pool (dense features)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


@register_backbone("resnet18")
def resnet18(in_channels: int = 3, small_images: bool = False, zero_init_residual: bool = False) -> ResNetBackbone:
    """ResNet-18 (torchvision, no weights), 512 features; small_images: CIFAR stem (3x3 conv1, no max-pool)."""
    return ResNetBackbone(tv_resnet.BasicBlock, [2, 2, 2, 2], in_channels, small_images, zero_init_residual)


@register_backbone("resnet34")
def resnet34(in_channels: int = 3, small_images: bool = False, zero_init_residual: bool = False) -> ResNetBackbone:
    """ResNet-34 (torchvision, no weights), 512 features; small_images: CIFAR stem (3x3 conv1, no max-pool)."""
    return ResNetBackbone(tv_resnet.BasicBlock, [3, 4, 6, 3], in_channels, small_images, zero_init_residual)


@register_backbone("resnet50")
def resnet50(in_channels: int = 3, small_images: bool = False, zero_init_residual: bool = False) -> ResNetBackbone:
    """ResNet-50 (torchvision, no weights), 2048 features; small_images: CIFAR stem (3x3 conv1, no max-pool)."""
    return ResNetBackbone(tv_resnet.Bottleneck, [3, 4, 6, 3], in_channels, small_images, zero_init_residual)


_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "backbone.")


def export_torchvision_state_dict(backbone: nn.Module | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The backbone's weights under torchvision's ResNet keys (``conv1.weight``, ``layer1.0.bn1.running_mean``...).

    Accepts the backbone module (possibly wrapped by DDP / ``torch.compile``) or a state dict whose keys
    may carry ``module.``, ``_orig_mod.`` or ``backbone.`` prefixes; classifier (``fc.``) keys are dropped.
    Load the result with ``torchvision.models.resnet50().load_state_dict(sd, strict=False)``.
    """
    state = backbone.state_dict() if isinstance(backbone, nn.Module) else dict(backbone)
    exported: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        stripped = key
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if stripped.startswith(prefix):
                    stripped, changed = stripped[len(prefix):], True
        if stripped.startswith("fc."):
            continue
        exported[stripped] = value.detach().clone() if isinstance(value, torch.Tensor) else value
    return exported
