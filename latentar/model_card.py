"""Model cards: the ``README.md`` of a model folder, a ``huggingface_hub.ModelCard``.

    write_model_card("runs/bmnist/prior/model", prior, dataset="binarized_mnist",
                     training=asdict(config), metrics={"bits_per_dim": 0.15, ...})
    point_card_at("staged/model", repo_id="user/bmnist-prior")   # the Use section names the repo

The card's metadata says ``license: mit``, ``library_name: latentar``, the pipeline tag and tags
(``datasets`` when the data is a named dataset, never a local folder); its text says what the model
is, then how to use it (load it, sample it, score it: for a code prior, on the codes of the VQ-VAE
or the tokens of the colour palette it learned, named by fingerprint and, once known, by Hub repo),
its architecture, the software that made it, its training and its test scores. The Use section is
the last one: `point_card_at` rewrites it for the model's repo and keeps the rest. No local path is
written into a card.
``latentar.load`` never reads the card, and the sha256 in ``config.json`` covers only the weights.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from huggingface_hub import ModelCard, ModelCardData
from torch import nn

from latentar.files import atomic_write_bytes, read_text
from latentar.run_files import read_codes_source
from latentar.saving import read_config, versions

CARD_FILE = "README.md"
LICENSE = "mit"  # latentar's licence, which the models it makes are shared under
USE = "## Use\n"  # the heading of the card's last section
SAMPLE_METRICS = "## Sample metrics\n"  # the heading of a recipe's [metrics] results, before Use
HERE = "path/to/this/folder"  # where a card that names no Hub repo says the model is
VQVAE_HERE = "path/to/vqvae"  # where it says the VQ-VAE of a code prior is, when no repo is known
# what a card calls the model types that turn images into symbols: (name, its symbols, where it is, the
# Python name of the loaded model), read from a code prior's codes_source.json ("vqvae" when it names none)
TOKENIZERS = {"vqvae": ("VQ-VAE", "codes", VQVAE_HERE, "vqvae"),
              "palette": ("colour palette", "palette tokens", "path/to/palette", "palette")}
GENERATION = "unconditional-image-generation"  # a prior's pipeline tag
ENCODING = "image-feature-extraction"  # a VQ-VAE's: it turns images into codes
PIPELINE_TAGS = {"vqvae": ENCODING, "palette": ENCODING, "classifier": "image-classification"}  # the rest: GENERATION


class CardModel(Protocol):
    """What a card reads of a model: a saved prior, VQ-VAE or classifier (``latentar.saving.Saveable``;
    a VQ-VAE's card also names its ``fingerprint()``)."""

    @property
    def model_type(self) -> str: ...

    def config_dict(self) -> dict: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...


def write_model_card(folder: str | Path, model: CardModel, *, dataset: str | None = None,
                     training: dict | None = None, metrics: dict | None = None) -> Path:
    """Write ``folder/README.md`` describing ``model`` (a saved prior, VQ-VAE or classifier; a code prior's
    VQ-VAE is read from ``folder``'s codes_source.json when there is one)."""
    card = model_card(model, dataset=dataset, training=training, metrics=metrics, source=read_codes_source(folder))
    return atomic_write_bytes(Path(folder) / CARD_FILE, str(card).encode())


def point_card_at(folder: str | Path, *, repo_id: str | None = None, vqvae_repo: str | None = None) -> Path:
    """Rewrite the Use section of ``folder/README.md`` for the model saved in ``folder``, as the Hub
    repo ``repo_id`` (None: a local folder) whose code VQ-VAE, if any, is the repo ``vqvae_repo``,
    with the codes_source.json of ``folder``; the rest of the card is kept as it is."""
    path = Path(folder) / CARD_FILE
    card = ModelCard(read_text(path))
    config = read_config(folder)
    datasets = card.data.get("datasets")
    use = use_section(config["model_type"], config["config"], dataset=datasets[0] if datasets else None,
                      source=read_codes_source(folder), repo_id=repo_id, vqvae_repo=vqvae_repo)
    card.text = card.text.partition(USE)[0].rstrip("\n") + "\n\n" + use + "\n"
    return atomic_write_bytes(path, str(card).encode())


def add_sample_metrics(folder: str | Path, metrics: dict[str, dict]) -> Path:
    """Write (or rewrite) the Sample metrics section of ``folder/README.md``, before its Use section:
    a table per measured set of ``metrics`` ({"samples": `latentar.quality.measure`'s result, ...}),
    each naming its features, sample count and reference split."""
    path = Path(folder) / CARD_FILE
    card = ModelCard(read_text(path))
    before, _, use = card.text.partition(USE)
    before = before.partition(SAMPLE_METRICS)[0].rstrip("\n")
    tables = "\n\n".join(f"{name.capitalize()}:\n\n" + table({key: value for key, value in result.items()
                                                             if not isinstance(value, dict)})
                          for name, result in metrics.items())
    card.text = f"{before}\n\n{SAMPLE_METRICS}\n{tables}\n\n{USE}{use}"
    return atomic_write_bytes(path, str(card).encode())


def model_card(model: CardModel, *, dataset: str | None = None, training: dict | None = None,
               metrics: dict | None = None, source: dict | None = None, repo_id: str | None = None,
               vqvae_repo: str | None = None) -> ModelCard:
    """The card of ``model`` (see the module docstring); ``source`` is a code prior's codes_source.json."""
    config, kind = model.config_dict(), model.model_type
    dataset = dataset if dataset is None or is_dataset_name(dataset) else None
    data = ModelCardData(license=LICENSE, library_name="latentar", tags=tags(kind, config),
                         pipeline_tag=PIPELINE_TAGS.get(kind, GENERATION),
                         datasets=[dataset] if dataset else None)
    parameters = sum(p.numel() for p in model.parameters())
    sections = [f"# {title(kind, config)}\n\n{summary(model, dataset, source)}",
                "## Architecture\n\n" + f"{parameters:,} parameters.\n\n" + table(flatten(config)),
                "## Software\n\n" + table({f"{name} version": v for name, v in versions().items()}),
                "## Training\n\n" + (table(flatten(training)) if training else "Not recorded."),
                "## Test metrics\n\n" + (table(flatten(metrics)) if metrics else "Not recorded."),
                use_section(kind, config, dataset=dataset, source=source, repo_id=repo_id, vqvae_repo=vqvae_repo)]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def is_dataset_name(dataset: str) -> bool:
    """Whether ``dataset`` names a dataset ("mnist"), not a local folder (the code grids a one-stage prior
    learned): a card names the one and never the other."""
    return os.sep not in dataset and "/" not in dataset and not Path(dataset).exists()


def use_section(model_type: str, config: dict, *, dataset: str | None, source: dict | None, repo_id: str | None,
                vqvae_repo: str | None) -> str:
    """The card's last section: how to load the model and the exact commands that use it."""
    where = f"hf://{repo_id}" if repo_id else HERE
    data = dataset or "DATASET"
    if model_type == "classifier":
        return (f"{USE}\n```python\nimport latentar\n\nclassifier = latentar.load({json.dumps(where)})\n"
                "features = classifier.features(images)  # uint8 images (B, C, H, W) -> (B, D)\n```\n\n"
                "Measure a prior's samples in its features:\n\n"
                f"```bash\nlatentar eval-samples --prior PRIOR --data {data} --features classifier:{where}\n```")
    if model_type in ("vqvae", "palette"):
        _, symbols, _, name = TOKENIZERS[model_type]
        return (f"{USE}\n```python\nimport latentar\n\n{name} = latentar.load({json.dumps(where)})\n"
                f"codes = {name}.encode(images)  # uint8 images (B, C, H, W) -> {symbols} (B, h, w)\n"
                f"images = {name}.decode_codes(codes)\n```\n\n"
                "Encode a dataset into code grids, then train a prior on them:\n\n"
                f"```bash\nlatentar encode --vqvae {where} --data {data} --out codes\n"
                f"latentar train-prior --data codes --vqvae {where} --prior pixelcnn --out prior_run\n```")
    load = f"```python\nimport latentar\n\nprior = latentar.load({json.dumps(where)})\n```"
    if config["spec"]["symbols"] != "codes":
        return (f"{USE}\n{load}\n\nDraw 64 images, and score the test split (bits per dimension):\n\n"
                f"```bash\nlatentar sample --model {where} --out samples.png\n"
                f"latentar eval --model {where} --data {data}\n```")
    tokenizer, symbols, here, name = TOKENIZERS[tokenizer_of(source)]
    vqvae = f"hf://{vqvae_repo}" if vqvae_repo else here
    level = source["level"] if source else "codes"
    sample = {"codes": f"--model {where}", "top": f"--prior {where} --bottom-prior BOTTOM_PRIOR",
              "bottom": f"--prior TOP_PRIOR --bottom-prior {where}"}[level]
    scored_level = "" if level == "codes" else f" --data-option level={level}"
    decode = "" if level != "codes" else (
        f"\n\nIn Python, the {tokenizer} turns the prior's draws into images:\n\n```python\n"
        f"{name} = latentar.load({json.dumps(vqvae)})\n"
        f"images = {name}.decode_codes(prior.sample(64)[:, 0])  # {symbols} (64, h, w) -> uint8 images\n```")
    palette = tokenizer_of(source) == "palette"
    scored = " in nats per palette token, not comparable with 8-bit bits/dim" if palette else ""
    return (f"{USE}\n{load}\n\n{decoder(source, vqvae_repo)}{decode}\n\n"
            f"Draw 64 images (the prior draws {symbols}, the {tokenizer} decodes them), and score the test "
            f"split{scored}; a code prior is scored on its symbols, so `latentar encode` first turns the test "
            f"images into that {tokenizer}'s {symbols}{' (`--vqvae` takes the palette)' if palette else ''}:\n\n"
            f"```bash\nlatentar sample {sample} --vqvae {vqvae} --out samples.png\n"
            f"latentar encode --vqvae {vqvae} --data {data} --out codes\n"
            f"latentar eval --model {where} --data codes{scored_level}\n```")


def tokenizer_of(source: dict | None) -> str:
    """The model type that made a code prior's symbols (``TOKENIZERS``): its codes_source.json's, else "vqvae"."""
    return (source or {}).get("tokenizer", "vqvae")


def decoder(source: dict | None, vqvae_repo: str | None) -> str:
    """Which VQ-VAE (or palette) decodes a code prior: its fingerprint and, when known, its Hub repo."""
    if source is None:
        return ("The VQ-VAE whose codes this prior learned was not recorded: decode with the VQ-VAE that "
                "made its training codes.")
    tokenizer, symbols, here, _ = TOKENIZERS[tokenizer_of(source)]
    where = f"It is published as `hf://{vqvae_repo}`." if vqvae_repo else (
        f"Use the {tokenizer} of that fingerprint (`{here}` below); `latentar encode` prints its fingerprint.")
    what = symbols if tokenizer_of(source) == "palette" else f"`{source['level']}` codes"
    return (f"Its symbols are the {what} of the {tokenizer} with fingerprint `{source['vqvae_fingerprint']}`, "
            f"and only that {tokenizer} decodes them (`latentar sample` refuses any other). {where}")


def tags(model_type: str, config: dict) -> list[str]:
    if model_type == "classifier":
        return ["latentar", "image-classification", "sample-metrics"]
    if model_type == "vqvae":
        return ["latentar", "vq-vae", "vqvae-2" if config["config"]["hierarchical"] else "vqvae"]
    if model_type == "palette":
        return ["latentar", "image-gpt", "colour-palette"]
    return ["latentar", "autoregressive", "prior", config["name"], config["spec"]["head"],
            f"{config['spec']['symbols']}-mode"]


def title(model_type: str, config: dict) -> str:
    if model_type == "classifier":
        return f"Classifier of {'×'.join(map(str, config['image_shape']))} images into {config['num_classes']} classes"
    if model_type in ("vqvae", "palette"):
        name = "VQ-VAE" if model_type == "vqvae" else "Colour palette"
        return f"{name} for {'×'.join(map(str, config['image_shape']))} images"
    spec = config["spec"]
    return f"{config['name']} prior over {'×'.join(map(str, spec['shape']))} {spec['symbols']}"


def summary(model: CardModel, dataset: str | None, source: dict | None = None) -> str:
    config = model.config_dict()
    trained = f" trained on `{dataset}`" if dataset else ""
    if model.model_type == "classifier":
        accuracy = config["test_accuracy"]
        measured = "" if accuracy is None else f" Its test accuracy is {accuracy:.4f}."
        return (f"A small CNN classifier{trained}: its penultimate layer ({config['feature_dim']} features) is what "
                f"`latentar eval-samples --features classifier:PATH` compares.{measured} Made with latentar.")
    if model.model_type == "vqvae":
        fingerprint = getattr(model, "fingerprint")()  # a VQ-VAE (latentar.vqvae.VQVAE) has one
        return (f"A VQ-VAE{trained}: it encodes images into grids of codes from a codebook of "
                f"{config['config']['codebook_size']} and decodes code grids back into images. Its fingerprint, "
                f"which the code priors trained on its codes record, is `{fingerprint}`. Made with latentar.")
    if model.model_type == "palette":
        fitted = f" fitted to `{dataset}`" if dataset else ""
        return (f"Image GPT's colour palette{fitted}: {config['config']['num_colors']} colours (k-means of the "
                "pixels' colours); it encodes each pixel as the token of its nearest colour and decodes tokens back "
                "into colours. Priors over its tokens are scored in nats (bits) per palette token, not comparable "
                f"with 8-bit bits/dim. Its fingerprint is `{getattr(model, 'fingerprint')()}`. Made with latentar.")
    spec = config["spec"]
    if dataset and spec["symbols"] == "codes":
        symbols = "palette tokens" if tokenizer_of(source) == "palette" else "VQ-VAE codes"
        trained = f" trained on the {symbols} of `{dataset}`"
    conditional = f", conditioned on {spec['num_classes']} classes" if spec["num_classes"] else ""
    return (f"An exact autoregressive prior{trained}: `log_prob` is the true log-likelihood of a grid of "
            f"{spec['num_symbols']} symbols per position, drawn in raster order with the `{spec['head']}` "
            f"head{conditional}. Made with latentar.")


def flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"spec.shape": [1, 7, 7], ...}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def table(values: dict[str, Any]) -> str:
    """A two-column Markdown table of names and values."""
    rows = [f"| {name} | {shown(value)} |" for name, value in values.items()]
    return "\n".join(["| name | value |", "|---|---|", *rows])


def shown(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value.replace("|", "\\|")
    return json.dumps(value)
