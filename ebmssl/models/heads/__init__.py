"""Heads: embeddings (N, input_dim) -> (N, output_dim). Every module here registers itself."""

from ebmssl._autoimport import import_submodules

import_submodules(__name__)
