"""What sasa keeps on disk: atomic writes, the cache folder, per-sample JSONL records, model artefacts."""
