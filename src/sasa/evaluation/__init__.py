"""Running every mode over a dataset: the resumable runner, the one run pipeline, the metrics."""
