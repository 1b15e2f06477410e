"""Stage 5: hyperparameter search (Ray Tune + Optuna + ASHA over :func:`raysearch.train.fit`).

``space`` turns a search-space YAML into an Optuna define-by-run function; ``tune`` runs the
sweep (shared objects, Ray Train trials, resume); ``tracking`` logs trials to W&B.
"""
from raysearch.search.space import SearchSpace, load_space, parse_space
from raysearch.search.tune import SweepConfig, SweepResult, run_sweep

__all__ = ["SearchSpace", "SweepConfig", "SweepResult", "load_space", "parse_space", "run_sweep"]
