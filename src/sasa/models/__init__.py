"""Model adapters (architecture knowledge) and loading."""
