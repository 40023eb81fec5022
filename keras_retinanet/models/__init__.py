"""Backbones and model builders: backbone(name), load_model, convert_model."""
