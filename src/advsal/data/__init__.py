"""Data: the ImageSet container, loaders for every supported format, splits and class depletion."""

from .fetch import data_home, is_cached
from .imageset import DataError, DataWarning, ImageSet, deplete_class, stratified_split, subset, validate_arrays
from .loaders import (
    REGISTRY,
    list_datasets,
    load_dataset,
    read_idx,
    register_dataset,
)
from .localization import LocalizationSet, load_masked_folder, make_cluttered_mnist, read_masked_folder  # noqa: F401

__all__ = ["DataError", "DataWarning", "ImageSet", "REGISTRY", "data_home", "deplete_class", "is_cached",
           "list_datasets", "load_dataset", "read_idx", "register_dataset", "stratified_split", "subset",
           "validate_arrays"]
