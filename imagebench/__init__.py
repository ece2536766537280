"""imagebench: a reproducible benchmarking pipeline for ImageNet classifiers."""

__version__ = "0.1.0"
