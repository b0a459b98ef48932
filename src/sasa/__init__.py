"""sasa: Self-Aware Safety Augmentation for vision-language models (arXiv 2507.21637)."""

__version__ = "0.1.0"
