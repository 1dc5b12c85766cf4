"""Backbones (ResNet, ViT, small CPU-sized nets) and projection heads, built by name from YAML.

``build_backbone({"name": "resnet18", "small_images": True})`` returns an ``nn.Module`` mapping images
(N, C, H, W) to features (N, F) with an int ``output_dim``; ``build_heads(spec_or_list, input_dim)``
chains heads (MLP, prototypes, DINO head, identity), each with an int ``output_dim``.
"""

from ebmssl.models import backbones, heads  # noqa: F401  (registers the built-in components)
from ebmssl.models.backbones.resnet import export_torchvision_state_dict
from ebmssl.models.build import HeadChain, build_backbone, build_head, build_heads
from ebmssl.models import architectures  # noqa: F401,E402  (registers jepa, masked_autoencoder, ...; after build)

__all__ = ["HeadChain", "build_backbone", "build_head", "build_heads", "export_torchvision_state_dict"]
