"""Saved models on the Hugging Face Hub, named ``hf://user/repo`` or ``hf://user/repo@revision``.

    folder = snapshot("hf://user/repo@v1")   # the repo's files at revision v1, in the Hub cache

``huggingface_hub.snapshot_download`` fetches the repo's JSON, safetensors and Markdown files (all a
saved model folder holds) into the Hub cache (``HF_HOME`` / ``HF_HUB_CACHE``), or finds them there;
with ``HF_HUB_OFFLINE=1`` only the cache is read. Nothing fetched is trusted or run here:
``latentar.saving.load`` checks a snapshot exactly as it checks a local folder. The cache keeps a
snapshot's files as links to the repo's blobs (``models--user--repo/snapshots/REV/config.json`` ->
``../../blobs/SHA``); `is_cached_blob_link` tells ``latentar.files`` which links those are, the only
links its readers follow.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from latentar.version import __version__

PREFIX = "hf://"
FETCHED = ["*.json", "*.safetensors", "*.md"]  # what a saved model folder holds


class HubError(ValueError):
    """A ``hf://`` location that names no repo, or a repo that cannot be fetched."""


def is_hub_location(location: str | os.PathLike) -> bool:
    """Whether ``location`` names a Hub repo (``hf://...``) rather than a local folder."""
    return isinstance(location, str) and location.startswith(PREFIX)


def is_cached_blob_link(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a link the Hub cache made: a file of a snapshot, under
    ``CACHE/models--user--repo/snapshots/``, that points to a blob of the same repo,
    ``CACHE/models--user--repo/blobs/SHA``."""
    path = Path(path)
    if not path.is_symlink():
        return False
    cache = Path(constants.HF_HUB_CACHE).resolve()
    try:
        repo, kind, *_ = path.parent.resolve().relative_to(cache).parts
    except ValueError:  # outside the cache, or the cache itself
        return False
    return kind == "snapshots" and path.resolve().parent == cache / repo / "blobs"


def parse_location(location: str) -> tuple[str, str | None]:
    """'hf://user/repo@v1' -> ('user/repo', 'v1'); 'hf://user/repo' -> ('user/repo', None)."""
    repo_id, at, revision = location.removeprefix(PREFIX).partition("@")
    try:
        validate_repo_id(repo_id)
        if at and not revision:
            raise HFValidationError("the revision after '@' is empty")
    except HFValidationError as e:
        raise HubError(f"{location!r} is not a Hub model location; expected hf://USER/REPO or "
                       f"hf://USER/REPO@REVISION ({e})") from None
    return repo_id, revision or None


def snapshot(location: str) -> Path:
    """The local folder holding the files of the Hub repo ``location`` names (downloaded if need be)."""
    repo_id, revision = parse_location(location)
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=FETCHED, library_name="latentar",
                                   library_version=__version__)
    except RevisionNotFoundError:
        raise HubError(f"{location}: the Hub repo {repo_id} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise HubError(f"{location}: there is no model repo {repo_id} on the Hub, or it is private or gated and "
                       "no token with access was given (HF_TOKEN, or `hf auth login`)") from None
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise HubError(f"{location} is not in the Hub cache ({constants.HF_HUB_CACHE}), and HF_HUB_OFFLINE=1 "
                           "forbids downloading it: fetch it once online, or unset HF_HUB_OFFLINE") from None
        raise HubError(f"{location} could not be downloaded (is the Hub reachable?) and is not in the Hub cache "
                       f"({constants.HF_HUB_CACHE})") from None
    except HfHubHTTPError as e:
        raise HubError(f"{location}: the Hub refused the download: {e}") from None
    assert isinstance(folder, str)  # a dry run alone returns a list
    return Path(folder)
