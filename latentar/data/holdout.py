"""The held-out test split of a folder of images that has no ``train/`` and ``test/`` sub-folders.

An image is a test image when the sha256 of its name (its path inside the folder, with ``/``
separators) read as a number in [0, 1) falls below ``test_fraction``. Each image's side depends
on its own name only, so adding or removing images never moves the others; renaming one may.

    test = held_out_names(["a.png", "cats/b.png", ...], 0.05)   # the names of the test images
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection

TEST_FRACTION = 0.05  # the share of a flat folder's images held out for testing, by default
HASH_BYTES = 8  # the leading bytes of the sha256 that make a name's number


def name_position(name: str) -> float:
    """The number in [0, 1) that the sha256 of ``name`` (UTF-8) gives: a fixed, uniform-looking draw per name."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:HASH_BYTES], "big") / 2 ** (8 * HASH_BYTES)


def held_out_names(names: Collection[str], fraction: float) -> set[str]:
    """The names held out for testing: those whose `name_position` is below ``fraction``.

    With two names or more and ``fraction > 0`` both sides keep at least one name: when none
    falls below ``fraction`` the lowest is held out, and when all do the highest is kept for
    training. ``fraction = 0`` holds out nothing, and so does a single name.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"test_fraction must lie in [0, 1), got {fraction}")
    if fraction == 0 or len(names) < 2:
        return set()
    ranked = sorted(names, key=name_position)
    test = {name for name in ranked if name_position(name) < fraction}
    if not test:
        return {ranked[0]}
    if len(test) == len(ranked):
        test.discard(ranked[-1])
    return test
