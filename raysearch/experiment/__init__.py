"""``raysearch experiment``: paired K-fold x seeds x label-ratio comparison of methods and weighting
schemes, run as Ray Tune trials, with honest statistics (see :mod:`.protocol`, :mod:`.stats`,
:mod:`.report`)."""
from raysearch.experiment.protocol import (DEFAULT_VARIANTS, REF, ExperimentConfig, ExperimentResult, Variant,
                                           parse_variants, run_experiment)

__all__ = ["DEFAULT_VARIANTS", "REF", "ExperimentConfig", "ExperimentResult", "Variant", "parse_variants",
           "run_experiment"]
