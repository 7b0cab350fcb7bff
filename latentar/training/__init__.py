"""Training: one Accelerate trainer for both stages, its config, LR schedules and objectives."""

from latentar.run_files import read_done, read_metrics
from latentar.training.checkpoint import CheckpointError
from latentar.training.config import TrainConfig
from latentar.training.ema import make_ema, update_ema
from latentar.training.objectives import prior_objective, prior_objective_of, vqvae_objective
from latentar.training.run_folder import RunFolderError
from latentar.training.schedules import lr_factor, make_scheduler
from latentar.training.trainer import NonFiniteLossError, Trainer

__all__ = ["CheckpointError", "NonFiniteLossError", "RunFolderError", "TrainConfig", "Trainer", "lr_factor",
           "make_ema", "make_scheduler", "prior_objective", "prior_objective_of", "read_done", "read_metrics",
           "update_ema", "vqvae_objective"]
