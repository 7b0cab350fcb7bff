"""Model cards: every exported model folder gets a README.md in the Hugging Face convention,
which says what the model is and how it scored, and which loading ignores."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch.utils.data import TensorDataset

import latentar
from latentar.data.codes import write_codes_source
from latentar.evaluation import evaluate_prior
from latentar.model_card import CARD_FILE, write_model_card
from latentar.saving import NotAModelError
from latentar.training import TrainConfig, Trainer, prior_objective, read_done


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("card")
    x = (torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.5).to(torch.uint8)
    data = TensorDataset(x, torch.zeros(32, dtype=torch.long))
    torch.manual_seed(0)
    prior = latentar.build_prior("gated_pixelcnn", (1, 4, 4), 2, preset="tiny")
    Trainer(prior, prior_objective, data, TrainConfig(steps=2, batch_size=8, lr=3e-3), out, dataset="toy_grids",
            evaluate=lambda m, acc: evaluate_prior(m, data, acc)).fit()
    return out


def test_the_exported_model_has_a_card_that_parses_and_tells_what_it_is(run):
    text = (run / "model" / CARD_FILE).read_text()
    meta = front_matter(text)
    assert meta["library_name"] == "latentar" and meta["datasets"] == ["toy_grids"]
    assert {"latentar", "gated_pixelcnn", "categorical", "pixels-mode"} <= set(meta["tags"])
    model = latentar.load(run / "model")
    assert f"{sum(p.numel() for p in model.parameters()):,} parameters" in text
    done = read_done(run)
    assert f"| bits_per_dim | {done['eval']['bits_per_dim']:.6g} |" in text
    assert "| lr | 0.003 |" in text and "| steps | 2 |" in text
    assert meta["license"] == "mit" and meta["pipeline_tag"] == "unconditional-image-generation"
    assert 'latentar.load("path/to/this/folder")' in text and str(run) not in text  # no local path
    assert "latentar eval --model path/to/this/folder --data toy_grids" in text


def test_hugging_face_reads_the_card(run):
    hub = pytest.importorskip("huggingface_hub")
    card = hub.ModelCard.load(run / "model" / CARD_FILE)
    assert card.data.library_name == "latentar" and "gated_pixelcnn" in card.data.tags


def test_loading_ignores_the_card_and_the_checksum_still_guards_only_the_weights(run, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for path in (run / "model").iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    reference = latentar.load(run / "model")
    (folder / CARD_FILE).write_text("---\nlibrary_name: something else\n---\nedited by hand\n")
    edited = latentar.load(folder)
    for a, b in zip(reference.state_dict().values(), edited.state_dict().values()):
        assert torch.equal(a, b)
    weights = bytearray((folder / "model.safetensors").read_bytes())
    weights[-1] ^= 1
    (folder / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(NotAModelError, match="does not match the sha256"):
        latentar.load(folder)


def test_a_vqvae_card_names_its_codebook(tmp_path):
    vqvae = latentar.VQVAE((1, 8, 8), preset="tiny")
    vqvae.save(tmp_path)
    write_model_card(tmp_path, vqvae, metrics={"psnr": 20.5})
    text = (tmp_path / CARD_FILE).read_text()
    assert "vq-vae" in front_matter(text)["tags"] and "datasets" not in front_matter(text)
    assert f"codebook of {vqvae.config.codebook_size}" in text and "| psnr | 20.5 |" in text
    assert "## Training\n\nNot recorded." in text
    assert isinstance(latentar.load(tmp_path), latentar.VQVAE)


@pytest.mark.parametrize("tokenizer", ["palette", "vqvae"])
def test_a_code_priors_card_names_the_tokenizer_that_decodes_it_and_its_decoding_runs(tokenizer, tmp_path):
    """A prior over palette tokens: its card speaks of the palette (never a VQ-VAE) and of nats per
    palette token; over VQ-VAE codes, of the VQ-VAE. The card's Python decoding runs as written, once
    it is pointed at the tokenizer's folder."""
    if tokenizer == "palette":
        colours = torch.tensor([[0, 0, 0], [90, 20, 200], [250, 240, 10]], dtype=torch.uint8)
        images = colours[torch.arange(48) % 3].view(3, 4, 4, 3).permute(0, 3, 1, 2).contiguous()  # (3, 3, 4, 4)
        made = latentar.Palette(num_colors=3).fit(images)
        grid, K = (1, 4, 4), 3
    else:
        made = latentar.VQVAE((1, 8, 8), preset="tiny")
        grid, K = (1, *made.grid_shapes["codes"]), made.codebook_sizes["codes"]
    made.save(tmp_path / "tokenizer")
    prior = latentar.build_prior("pixelcnn", grid, K, symbols="codes", preset="tiny").eval()
    prior.save(tmp_path / "prior")
    write_codes_source(tmp_path / "prior", made.fingerprint(), "codes", made.model_type)
    write_model_card(tmp_path / "prior", prior, dataset="cifar10")
    text = (tmp_path / "prior" / CARD_FILE).read_text()
    use = text.partition("## Use\n")[2]
    if tokenizer == "palette":
        assert "trained on the palette tokens of `cifar10`" in text and "VQ-VAE" not in use
        assert f"the palette tokens of the colour palette with fingerprint `{made.fingerprint()}`" in use
        assert "nats per palette token, not comparable with 8-bit bits/dim" in use
        assert "latentar sample --model path/to/this/folder --vqvae path/to/palette" in use
    else:
        assert "trained on the VQ-VAE codes of `cifar10`" in text and "palette" not in use
        assert "latentar sample --model path/to/this/folder --vqvae path/to/vqvae" in use
    snippets = [block.partition("\n")[2] for block in use.split("```")[1::2] if block.startswith("python")]
    here = {"palette": "path/to/palette", "vqvae": "path/to/vqvae"}[tokenizer]
    code = "\n".join(snippets).replace("path/to/this/folder", str(tmp_path / "prior")).replace(
        here, str(tmp_path / "tokenizer"))
    namespace: dict = {}
    exec(code, namespace)
    assert namespace["images"].dtype == torch.uint8 and namespace["images"].shape == (64, *made.image_shape)
