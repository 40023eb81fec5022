"""Tensor helpers used by the layers: box decoding and anchor shifting in TF ops."""
