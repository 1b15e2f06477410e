"""Adapters from public dumps (exact original formats) to the canonical folder.

Importing this package registers every adapter in :data:`raysearch.data.registry.DATASETS`.
"""
from raysearch.data.adapters import amazon, movielens, pinterest  # noqa: F401
