"""lnlab: a toolkit for studying and using Layer Normalization."""

__version__ = "0.1.0"
