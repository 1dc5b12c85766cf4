"""Registered view pipelines (SimCLR, BYOL, multi-crop, identity). Every module here registers itself."""

from ebmssl._autoimport import import_submodules

import_submodules(__name__)
