"""Tensor helpers used by the layers: box decoding and anchor shifting in TF ops."""
from .common import bbox_transform_inv, shift

__all__ = ["bbox_transform_inv", "shift"]
