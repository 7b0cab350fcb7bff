"""The Hub, offline: ``latentar.load("hf://user/repo[@rev]")`` reads a snapshot of the Hub cache with the
same checks as a local folder; `push_to_hub` (and ``latentar push``) uploads a model folder with its card,
checked here by recording what ``HfApi.upload_folder`` is given."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import HfApi, constants

import latentar
from latentar import cli
from latentar.data.codes import write_codes_source
from latentar.hub import HubError
from latentar.model_card import write_model_card
from latentar.saving import NotAModelError

REV = "0123456789abcdef0123456789abcdef01234567"  # a commit hash
FINGERPRINT = "abcd1234abcd1234"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty Hub cache in tmp_path, read offline (the constants are read once, at import)."""
    folder = tmp_path / "hub-cache"
    for name, value, constant in (("HF_HUB_CACHE", str(folder), str(folder)), ("HF_HUB_OFFLINE", "1", True)):
        monkeypatch.setenv(name, value)
        monkeypatch.setattr(constants, name, constant)
    return folder


def cache_repo(cache: Path, repo_id: str, files: dict[str, bytes], revision: str = REV) -> Path:
    """Lay out ``files`` as huggingface_hub caches a download of ``repo_id``: blobs, a snapshot of links
    to them, and refs/main holding the revision -> the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    for folder in (snapshot, repo / "blobs", repo / "refs"):
        folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def files_of(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def tiny_models(tmp_path):
    torch.manual_seed(0)
    prior = latentar.build_prior("pixelcnn", (1, 4, 4), 4, preset="tiny").eval()
    vqvae = latentar.VQVAE((1, 8, 8), preset="tiny").eval()
    return {"prior": prior, "vqvae": vqvae}


def outputs(model) -> torch.Tensor:
    """What the model computes on fixed inputs: log p of grids, or a VQ-VAE's decoded codes."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        if isinstance(model, latentar.VQVAE):
            shape = (2, *model.grid_shapes["codes"])
            return model.decode_codes(torch.randint(0, model.config.codebook_size, shape, generator=g))
        return model.log_prob(torch.randint(0, 4, (3, 1, 4, 4), generator=g))


@pytest.fixture
def uploads(monkeypatch):
    """Record what would be pushed: the repos made and each uploaded folder's files."""
    made, pushed = [], []

    def create_repo(self, repo_id, **kwargs):
        made.append((repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        pushed.append((repo_id, files_of(Path(folder_path)), kwargs))  # the folder is gone after the push
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/{REV}"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return made, pushed


def card_of(files: dict[str, bytes]) -> tuple[dict, str]:
    text = files["README.md"].decode()
    return yaml.safe_load(text.split("---\n")[1]), text


@pytest.mark.parametrize("kind", ["prior", "vqvae"])
def test_a_cached_hub_repo_loads_offline_by_repo_id_and_revision_bitwise_like_the_local_model(kind, cache, tmp_path):
    model = tiny_models(tmp_path)[kind]
    model.save(tmp_path / "local")
    cache_repo(cache, "user/tiny", files_of(tmp_path / "local"))
    expected = outputs(latentar.load(tmp_path / "local"))
    for location in ("hf://user/tiny", f"hf://user/tiny@{REV}"):
        loaded = latentar.load(location).eval()
        assert type(loaded) is type(model) and torch.equal(outputs(loaded), expected)


def test_hub_locations_fail_clearly(cache, tmp_path):
    for bad in ("hf://", "hf://a/b/c", "hf://user/repo@", "hf://user/re po"):
        with pytest.raises(HubError, match="not a Hub model location; expected hf://USER/REPO"):
            latentar.load(bad)
    with pytest.raises(HubError, match="hf://user/absent is not in the Hub cache .*HF_HUB_OFFLINE=1"):
        latentar.load("hf://user/absent")
    cache_repo(cache, "user/card-only", {"README.md": b"# a card\n"})
    with pytest.raises(NotAModelError, match="hf://user/card-only holds no saved latentar model"):
        latentar.load("hf://user/card-only")


def test_a_snapshot_gets_the_same_checks_as_a_local_folder(cache, tmp_path):
    tiny_models(tmp_path)["prior"].save(tmp_path / "local")
    files = files_of(tmp_path / "local")
    weights = bytearray(files["model.safetensors"])
    weights[-1] ^= 1
    cache_repo(cache, "user/tampered", {**files, "model.safetensors": bytes(weights)})
    with pytest.raises(NotAModelError, match="does not match the sha256"):
        latentar.load("hf://user/tampered")
    snapshot = cache_repo(cache, "user/linked", {"config.json": files["config.json"]})
    (snapshot / "model.safetensors").symlink_to(tmp_path / "local" / "model.safetensors")  # out of the cache
    with pytest.raises(NotAModelError, match="not a regular file"):
        latentar.load("hf://user/linked")


def test_load_takes_a_run_stage_folder_as_the_cli_does(tmp_path):
    prior = tiny_models(tmp_path)["prior"]
    prior.save(tmp_path / "run" / "prior" / "model")
    assert torch.equal(outputs(latentar.load(tmp_path / "run" / "prior")), outputs(prior))


def code_prior_run(tmp_path) -> Path:
    """A run's stage folder holding a code prior, its card and the record of its VQ-VAE."""
    prior = latentar.build_prior("pixelcnn", (1, 2, 2), 8, symbols="codes", preset="tiny")
    folder = tmp_path / "run" / "prior" / "model"
    prior.save(folder)
    write_codes_source(folder, FINGERPRINT, "codes")
    write_model_card(folder, prior, dataset="mnist", training={"steps": 7}, metrics={"bits_per_dim": 1.5})
    return folder.parent


def test_push_uploads_the_model_its_card_and_its_codes_source_and_the_card_names_repos_not_paths(
        tmp_path, cache, uploads):
    run = code_prior_run(tmp_path)
    url = latentar.push_to_hub(run, "user/prior", vqvae_repo="user/vqvae", private=True)
    (made, pushed) = uploads
    assert made == [("user/prior", {"private": True, "exist_ok": True})] and url.endswith(REV)
    [(repo_id, files, _)] = pushed
    assert repo_id == "user/prior"
    assert set(files) == {"config.json", "model.safetensors", "README.md", "codes_source.json"}
    meta, text = card_of(files)
    assert meta["license"] == "mit" and meta["library_name"] == "latentar" and meta["datasets"] == ["mnist"]
    assert meta["pipeline_tag"] == "unconditional-image-generation" and "codes-mode" in meta["tags"]
    assert str(tmp_path) not in text and "path/to" not in text
    assert f"VQ-VAE with fingerprint `{FINGERPRINT}`" in text and "published as `hf://user/vqvae`" in text
    assert 'latentar.load("hf://user/prior")' in text
    assert "latentar sample --model hf://user/prior --vqvae hf://user/vqvae --out samples.png" in text
    assert "latentar encode --vqvae hf://user/vqvae --data mnist --out codes" in text
    assert "latentar eval --model hf://user/prior --data codes\n" in text  # codes, never --data mnist
    assert "| steps | 7 |" in text and "| bits_per_dim | 1.5 |" in text  # the trained card is kept
    cache_repo(cache, "user/prior", files)  # what was pushed loads back as what was saved
    assert torch.equal(outputs_of_codes(latentar.load("hf://user/prior")), outputs_of_codes(latentar.load(run)))


def outputs_of_codes(prior) -> torch.Tensor:
    return prior.log_prob(torch.arange(8).reshape(2, 1, 2, 2))


def test_push_of_a_vqvae_in_memory_saves_it_with_a_card(tmp_path, uploads):
    vqvae = tiny_models(tmp_path)["vqvae"]
    latentar.push_to_hub(vqvae, "user/vqvae")
    [(_, files, kwargs)] = uploads[1]
    assert set(files) == {"config.json", "model.safetensors", "README.md"}
    meta, text = card_of(files)
    assert meta["license"] == "mit" and meta["pipeline_tag"] == "image-feature-extraction"
    assert vqvae.fingerprint() in text and "latentar encode --vqvae hf://user/vqvae" in text
    with pytest.raises(ValueError, match="repo_id 'hf://user/vqvae' is not a Hub repo id"):
        latentar.push_to_hub(vqvae, "hf://user/vqvae")


def test_the_cli_pushes_a_stage_folder_and_reads_hf_locations(tmp_path, cache, uploads, capsys):
    run = code_prior_run(tmp_path)
    assert cli.main(["push", "--model", str(run), "--repo", "user/prior", "--message", "first"]) == 0
    assert "pushed" in capsys.readouterr().out and uploads[1][0][2]["commit_message"] == "first"
    _, text = card_of(uploads[1][0][1])
    assert "latentar sample --model hf://user/prior --vqvae path/to/vqvae" in text  # no VQ-VAE repo given
    assert cli.main(["eval", "--model", "hf://user/absent", "--data", "mnist"]) == 2
    assert "HF_HUB_OFFLINE=1" in capsys.readouterr().err
