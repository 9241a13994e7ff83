"""Evaluation of frozen representations."""

from gessl.eval.geometry import alignment, uniformity

__all__ = ["alignment", "uniformity"]
