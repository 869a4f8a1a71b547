"""Training of the learned methods: one engine (engine.py) shared by every model."""
from mrichain.train.engine import FitResult, TrainSettings, fit, hash_files, load_trained, seed_everything, select_device

__all__ = ["FitResult", "TrainSettings", "fit", "hash_files", "load_trained", "seed_everything", "select_device"]
