"""Model zoo (the papers' architectures), the Normalize layer, and safe save/load."""

from .io import ModelFileError, load_model, load_vgg16_weights, read_model_info, save_model
from .zoo import ZOO, Normalize, ZooModel, build_model, list_models

__all__ = ["ZOO", "ModelFileError", "Normalize", "ZooModel", "build_model", "list_models", "load_model",
           "load_vgg16_weights", "read_model_info", "save_model"]
