"""The identity head (``name: identity``): output = input, ``output_dim = input_dim``."""

from ebmssl.models.build import IdentityHead
from ebmssl.registry import register_head

register_head("identity")(IdentityHead)
