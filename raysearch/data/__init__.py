"""Data layer: canonical format, dataset registry, splits and the image cache.

Importing this package registers every built-in dataset (synthetic worlds, adapters)."""
from raysearch.data.format import Dataset, DatasetError, dataset_stats, load_folder, write_dataset
from raysearch.data.registry import DATASETS, load_dataset, prepare_dataset, register_dataset
from raysearch.data.splits import Split, make_split
from raysearch.data import adapters, synthetic  # noqa: F401,E402  (register the built-in datasets in DATASETS)

__all__ = [
    "DATASETS", "Dataset", "DatasetError", "Split", "dataset_stats", "load_dataset", "load_folder",
    "make_split", "prepare_dataset", "register_dataset", "write_dataset",
]
