"""Name → class registries. Unknown or duplicate names raise with the known names listed."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(LookupError):
    """A name that no registry entry carries."""


class Registry(Generic[T]):
    """A named table of components, e.g. ``PRIORS.register("pixelcnn")(PixelCNN)``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


PRIORS: Registry = Registry("prior")
HEADS: Registry = Registry("head")
DATASETS: Registry = Registry("dataset")
MODELS: Registry = Registry("model type")  # saved-model kinds: "prior", "vqvae"
