"""Scoring test items with the paper's letters protocol; backends by name (hf now, vllm later)."""
