"""Stage 5: hyperparameter search (Ray Tune + Optuna + ASHA over :func:`raysearch.train.fit`).

``space`` turns a search-space YAML into an Optuna define-by-run function; ``tune`` runs the
sweep (start, resume, results); ``shared`` owns the sweep's data on the driver's node;
``trainables`` is what a trial runs (per-epoch checkpoints, the TorchTrainer path); ``cluster``
holds Ray start-up and resource checks; ``results`` defines stop reasons and the results frame;
``tracking`` logs trials to W&B from the driver.
"""
from raysearch.search.space import SearchSpace, load_space, parse_space
from raysearch.search.tune import SweepConfig, SweepResult, run_sweep

__all__ = ["SearchSpace", "SweepConfig", "SweepResult", "load_space", "parse_space", "run_sweep"]
