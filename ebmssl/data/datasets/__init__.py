"""Registered datasets, each returning an in-memory :class:`~ebmssl.data.dataset.ImageDataset`."""

from ebmssl._autoimport import import_submodules

import_submodules(__name__)
