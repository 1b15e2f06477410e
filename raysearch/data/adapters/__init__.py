"""Adapters from public dumps (exact original formats) to the canonical folder."""
