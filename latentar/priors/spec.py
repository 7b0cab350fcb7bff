"""What a prior models, independent of its architecture: ``PriorSpec``."""

from __future__ import annotations

from dataclasses import dataclass, field

from latentar.augmentations import AUGMENTATIONS, SIZES, check_augmentations, num_augmentations
from latentar.checks import FRACTION, SYMBOLS, Checked
from latentar.nn.inputs import SYMBOL_KINDS


@dataclass
class PriorSpec(Checked):
    """What a prior models, independent of its architecture; every field is checked on creation."""

    label = "prior"
    bounds = {"num_symbols": SYMBOLS, "context_symbols": SYMBOLS, "symbols": SYMBOL_KINDS,
              "class_dropout": FRACTION, "augmentations": AUGMENTATIONS}

    shape: tuple[int, int, int]  # (C, H, W) of the symbol grid
    num_symbols: int  # K: 256 for 8-bit pixels, 2 for binarized, codebook size for codes
    head: str = "categorical"  # registered head name
    num_classes: int | None = None  # class-conditional when set
    symbols: str = "pixels"  # "pixels" (ordinal, scaled to [-1, 1]) or "codes" (embedded)
    embed_dim: int = 32  # embedding width per channel when symbols == "codes"
    context_symbols: int | None = None  # K of a spatial context map (e.g. top codes)
    context_shape: tuple[int, int] | None = None  # (h, w) of that map
    head_options: dict = field(default_factory=dict)  # extra head arguments, e.g. num_mixtures
    class_dropout: float = 0.0  # > 0: a learned null class, and training labels replaced by it
    #                             with this probability (classifier-free guidance)
    augmentations: tuple[str, ...] = ()  # distribution augmentation: the types whose id the prior is
    #                                      conditioned on (latentar.augmentations); () = none

    def __post_init__(self):
        super().__post_init__()
        if (self.context_symbols is None) != (self.context_shape is None):
            raise ValueError("context_symbols and context_shape must be given together")
        if self.class_dropout > 0 and self.num_classes is None:
            raise ValueError(f"class_dropout={self.class_dropout} needs a class-conditional prior (num_classes)")
        check_augmentations(self.augmentations, self.shape, self.context_shape)

    @property
    def label_rows(self) -> int | None:
        """Rows of the class-bias tables: the classes, plus the null class ``num_classes``
        when ``class_dropout > 0``; None for an unconditional prior."""
        if self.num_classes is None:
            return None
        return self.num_classes + (1 if self.class_dropout > 0 else 0)

    @property
    def augment_sizes(self) -> tuple[int, ...]:
        """Values of each augmentation type, in order (rot90, transpose: (4, 2)); () without any."""
        return tuple(SIZES[name] for name in self.augmentations)

    @property
    def num_augmentations(self) -> int:
        """Ids of the augmentation product, identity (0) included; 1 without augmentations."""
        return num_augmentations(self.augmentations)
