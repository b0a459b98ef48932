"""Samples, manifests, benchmark loaders, typographic rendering and splits."""

from sasa.data.sample import LABELS, Sample, read_manifest, write_manifest

__all__ = ["LABELS", "Sample", "read_manifest", "write_manifest"]
