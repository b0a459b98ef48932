"""Test and benchmark helpers: tiny, offline, random-weight models of real Hugging Face architectures."""
