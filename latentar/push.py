"""Sharing a saved model on the Hugging Face Hub.

    push_to_hub("runs/main/prior", "user/mnist-prior", vqvae_repo="user/mnist-vqvae")
    push_to_hub(vqvae, "user/mnist-vqvae")          # a model in memory: saved afresh

A saved model is first loaded (``latentar.saving.load``: every check a download will meet), then
its files are staged in a temporary folder and uploaded with ``HfApi.upload_folder`` into the repo
(made if missing: ``create_repo(exist_ok=True)``): config.json, model.safetensors, a code prior's
codes_source.json, and the model card (README.md, ``latentar.model_card``) whose Use section
`point_card_at` rewrites for the repo. The Hub token is that of ``hf auth login`` or ``HF_TOKEN``.
``latentar.load("hf://user/repo")`` reads the model back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from latentar.files import atomic_write, open_regular
from latentar.hub import HubError
from latentar.model_card import CARD_FILE, point_card_at, write_model_card
from latentar.run_files import CODES_SOURCE_FILE
from latentar.saving import CONFIG_FILE, WEIGHTS_FILE, Saveable, load, model_folder

COMMIT_MESSAGE = "Upload a latentar model"
SHARED = (CONFIG_FILE, WEIGHTS_FILE, CODES_SOURCE_FILE, CARD_FILE)  # the files of a model folder that are pushed


def push_to_hub(model: Saveable | str | os.PathLike, repo_id: str, *, vqvae_repo: str | None = None,
                private: bool | None = None, token: str | None = None, commit_message: str = COMMIT_MESSAGE) -> str:
    """Upload ``model`` to the Hub model repo ``repo_id`` ("user/repo") -> the URL of the commit.

    ``model`` is a prior or VQ-VAE in memory (saved with a card that records no training), or where
    one is saved (``latentar.saving.model_folder``: a model folder, a run's stage folder, or hf://),
    whose card (training, test scores) and codes_source.json go with it. ``vqvae_repo`` names, in a
    code prior's card, the repo of the VQ-VAE that decodes it. ``private`` applies to a repo made
    here; ``token`` defaults to the logged-in one. Hub failures raise ``HubError`` naming the repo."""
    check_repo_id(repo_id, "repo_id")
    if vqvae_repo is not None:
        check_repo_id(vqvae_repo, "vqvae_repo")
    with tempfile.TemporaryDirectory(prefix="latentar-push-") as tmp:
        staged = Path(tmp)
        if isinstance(model, Saveable):
            model.save(staged)
            write_model_card(staged, load(staged))
        else:
            copy_model_folder(model_folder(model), staged)
        point_card_at(staged, repo_id=repo_id, vqvae_repo=vqvae_repo)
        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            commit = api.upload_folder(repo_id=repo_id, folder_path=staged,
                                       commit_message=commit_message)
        except HfHubHTTPError as e:
            raise HubError(f"pushing to the Hub repo {repo_id} failed (logged in with write access? `hf auth "
                           f"login` or HF_TOKEN): {e}") from None
    return commit.commit_url


def copy_model_folder(folder: Path, staged: Path) -> None:
    """Copy the `SHARED` files of the model folder ``folder`` that are there into ``staged``, once the
    model loads, with a card written for the model when the folder has none."""
    model = load(folder)
    for name in SHARED:
        if (folder / name).is_file():
            with open_regular(folder / name) as source, atomic_write(staged / name) as target:
                shutil.copyfileobj(source, target)
    if not (staged / CARD_FILE).is_file():
        write_model_card(staged, model)


def check_repo_id(repo_id: str, what: str) -> None:
    """``repo_id`` must be a Hub repo id, "user/repo"."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ValueError(f"{what} {repo_id!r} is not a Hub repo id; expected USER/REPO, without hf:// ({e})") from None
