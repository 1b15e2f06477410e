"""Method registry: stage plans per method."""
import pytest

from raysearch.config import TrainConfig
from raysearch.train.methods import METHODS
from raysearch.registry import UnknownNameError


def test_registered_methods():
    assert METHODS.names() == ["contrastive", "image_only", "mtl", "sequential"]
    assert not METHODS.get("image_only").uses_cf and METHODS.get("mtl").uses_cf
    with pytest.raises(UnknownNameError, match="choose one of: contrastive, image_only, mtl, sequential"):
        METHODS.get("mlt")


def test_stage_plans():
    cfg = TrainConfig(epochs=6)
    (s,) = METHODS.get("image_only").stages(cfg)
    assert (s.main, s.aux, s.epochs) == (True, None, 6)
    (s,) = METHODS.get("mtl").stages(cfg)
    assert (s.main, s.aux) == (True, "reconstruct")
    (s,) = METHODS.get("contrastive").stages(cfg)
    assert s.aux == "triplet"
    a, f = METHODS.get("sequential").stages(cfg)
    assert (a.main, a.aux, a.epochs, a.track_best) == (False, "reconstruct", 3, False)
    assert (f.main, f.aux, f.epochs, f.track_best) == (True, None, 3, True)
    a, f = METHODS.get("sequential").stages(TrainConfig(epochs=6, aux_epochs=2))
    assert (a.epochs, f.epochs) == (2, 4)


def test_sequential_budget_errors():
    with pytest.raises(ValueError, match="aux_epochs=6"):
        METHODS.get("sequential").stages(TrainConfig(epochs=6, aux_epochs=6))
    with pytest.raises(ValueError, match="epochs >= 2"):
        METHODS.get("sequential").stages(TrainConfig(epochs=1))
