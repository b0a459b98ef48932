"""Defences at inference: guarded generation, the modes an evaluation runs, the prompt-level baselines."""
