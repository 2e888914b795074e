"""Quantizing a model or adapter with a quantizer plugin, calibration texts included."""
