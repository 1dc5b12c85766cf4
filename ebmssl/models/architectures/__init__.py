"""Registered architectures beyond joint embedding: predictive (MAE, denoising AE) and latent-variable
predictive (I-JEPA, JEPA with capacity terms, capacity-limited latent). Every module here registers itself."""

from ebmssl._autoimport import import_submodules

import_submodules(__name__)
