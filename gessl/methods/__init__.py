"""SSL methods: backbone + projector (+ predictor, momentum copy, queue, prototypes, center) + loss.

>>> from gessl.models import MLP
>>> from gessl.methods import build_method, available_methods
>>> m = build_method("byol", MLP(8, width=16), proj_dims=(16, 8))
"""

from gessl.methods import catalog  # noqa: F401  (registers the built-in methods)
from gessl.methods.base import METHODS, Method, available_methods, build_method, register_method

__all__ = ["METHODS", "Method", "available_methods", "build_method", "register_method"]
