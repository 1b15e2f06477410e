"""Backbones (registry + factory), EfficientNet-Lite0 with real weights, and task heads."""
from raysearch.model.backbones import BACKBONES, Backbone, WeightsUnavailableError, create_backbone
from raysearch.model.heads import CFHead, CollaborativeModel

__all__ = ["BACKBONES", "Backbone", "CFHead", "CollaborativeModel", "WeightsUnavailableError", "create_backbone"]
