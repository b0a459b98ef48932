"""Detectors: the SASA probe, its detector directory and the baselines' detectors, and fitting them."""
