"""The default diffusion model, its trainer, and the evaluation embedder."""

from .unet import DEFAULT_MODEL_DIR, NULL_CLASS, DiffusionModel, build_scheduler, build_unet, load_model, save_model

__all__ = ["DEFAULT_MODEL_DIR", "NULL_CLASS", "DiffusionModel", "build_scheduler", "build_unet", "load_model", "save_model"]
