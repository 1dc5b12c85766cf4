"""Backbones: images (N, C, H, W) -> features (N, output_dim). Every module here registers itself."""

from ebmssl._autoimport import import_submodules

import_submodules(__name__)
