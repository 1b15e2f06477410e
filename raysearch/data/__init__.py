"""Data layer: canonical format, dataset registry, splits and the image cache."""
from raysearch.data.format import Dataset, DatasetError, dataset_stats, load_folder, write_dataset
from raysearch.data.registry import DATASETS, load_dataset, prepare_dataset, register_dataset
from raysearch.data.splits import Split, make_split

__all__ = [
    "DATASETS", "Dataset", "DatasetError", "Split", "dataset_stats", "load_dataset", "load_folder",
    "make_split", "prepare_dataset", "register_dataset", "write_dataset",
]
