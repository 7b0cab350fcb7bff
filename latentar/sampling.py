"""The user-facing names this module held before generation and image writing moved apart:
``from latentar.sampling import generate, save_grid`` keeps working. New code imports them
from their homes, ``latentar.generation`` (drawing, completion) and ``latentar.images``
(grids, PNG files)."""

from latentar.generation import complete, generate
from latentar.images import save_grid, save_individual

__all__ = ["complete", "generate", "save_grid", "save_individual"]
