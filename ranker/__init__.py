"""Adaptive multimodal ranking for e-commerce search: the domain and ML layer (no web code)."""

__version__ = "0.1.0"
