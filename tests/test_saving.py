"""Saved model folders: checksums, config values, header shapes and finite weights, checked
before anything is allocated; damaged or hostile folders fail with a clear error."""

import errno
import hashlib
import json
import math
import os
import stat
import struct
import subprocess

import pytest
import torch
from prior_cases import tiny_prior
from safetensors.torch import save_file

import latentar
from latentar import files
from latentar.checks import FieldError
from latentar.data.codes import write_codes_source
from latentar.saving import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, NonFiniteWeightsError, NotAModelError, load

DELETE = object()  # marks a config entry to remove


def saved_prior(folder, name="pixelcnn", **kwargs):
    tiny_prior(name, (1, 3, 3), 4, **kwargs).save(folder)
    return folder


def edit_config(folder, keys, value):
    """Set config.json's entry at the path ``keys`` to ``value`` (or delete it)."""
    path = folder / CONFIG_FILE
    config = json.loads(path.read_text())
    node = config
    for key in keys[:-1]:
        node = node[key]
    if value is DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    path.write_text(json.dumps(config))


def data_start(weights) -> int:
    """Offset of the first tensor byte: 8 bytes of header length, then the JSON header."""
    return 8 + struct.unpack("<Q", weights.read_bytes()[:8])[0]


def flip_byte(weights, offset: int) -> None:
    data = bytearray(weights.read_bytes())
    data[offset] ^= 0x01
    weights.write_bytes(bytes(data))


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", latentar.list_priors())
def test_every_prior_round_trips_bit_exactly_and_verifies(name, tmp_path):
    prior = tiny_prior(name, (1, 3, 3), 4)
    prior.save(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["format_version"] == FORMAT_VERSION == 2
    assert config["weights_sha256"] == hashlib.sha256((tmp_path / WEIGHTS_FILE).read_bytes()).hexdigest()
    loaded = load(tmp_path)
    assert type(loaded) is type(prior) and same_weights(prior, loaded)


@pytest.mark.parametrize("hierarchical", [False, True])
def test_vqvae_round_trips_bit_exactly_and_verifies(hierarchical, tmp_path):
    torch.manual_seed(0)
    model = latentar.VQVAE((1, 8, 8), preset="tiny", hierarchical=hierarchical)
    model.save(tmp_path)
    loaded = latentar.VQVAE.from_pretrained(tmp_path)
    assert same_weights(model, loaded) and loaded.config == model.config


def test_a_flipped_byte_in_the_weights_or_the_header_fails_the_checksum(tmp_path):
    weights = saved_prior(tmp_path / "a") / WEIGHTS_FILE
    flip_byte(weights, data_start(weights))  # lowest mantissa byte of the first value: still finite
    with pytest.raises(NotAModelError, match=r"model.safetensors does not match the sha256 .* expected [0-9a-f]{64}, "
                                             r"found [0-9a-f]{64}"):
        load(tmp_path / "a")
    unchecked = load(tmp_path / "a", verify=False)  # the caller skipped the checksum
    assert not same_weights(unchecked, tiny_prior("pixelcnn", (1, 3, 3), 4))
    with pytest.raises(NotAModelError, match="sha256"):
        latentar.Prior.from_pretrained(tmp_path / "a")
    assert isinstance(latentar.Prior.from_pretrained(tmp_path / "a", verify=False), latentar.Prior)
    weights = saved_prior(tmp_path / "b") / WEIGHTS_FILE
    flip_byte(weights, data_start(weights) // 2)
    with pytest.raises(NotAModelError, match="does not match the sha256"):
        load(tmp_path / "b")


def test_a_truncated_weights_file_is_a_clear_error(tmp_path):
    weights = saved_prior(tmp_path) / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-7])
    with pytest.raises(NotAModelError, match="does not match the sha256"):
        load(tmp_path)
    with pytest.raises(NotAModelError, match="model.safetensors is damaged or not a safetensors file"):
        load(tmp_path, verify=False)


BAD_CONFIG = [
    (("arch", "hidden"), -1, r"pixelcnn.hidden must be an integer >= 1, got -1"),
    (("arch", "hidden"), "lots", r"pixelcnn.hidden must be an integer >= 1, got 'lots'"),
    (("arch", "hidden"), None, r"pixelcnn.hidden must be an integer >= 1, got None"),
    (("arch", "hidden"), 6.0, r"pixelcnn.hidden must be an integer >= 1, got 6.0"),
    (("arch", "hidden"), True, r"pixelcnn.hidden must be an integer >= 1, got True"),
    (("arch", "hidden"), 7, r"wrong shapes: .*\(6, 12, 1, 1\) \(the config builds \(7, 14, 1, 1\)\)"),
    (("arch", "hidden"), 10**6, r": it would hold 5.2e\+13 weights and buffer values, more than the 4.29e\+09"),
    (("arch", "bogus"), 1, r"pixelcnn has unknown key\(s\) \['bogus'\]"),
    (("arch",), [6, 2], r"pixelcnn must be a dict of PixelCNNArch fields, got \[6, 2\]"),
    (("spec", "shape"), [1, 3.0, 3], r"prior.shape must be a list of 3 integers >= 1, got \[1, 3.0, 3\]"),
    (("spec", "shape"), [1, 3], r"prior.shape must be a list of 3 integers >= 1, got \[1, 3\]"),
    (("spec", "shape"), DELETE, r"prior lacks the key\(s\) \['shape'\]"),
    (("spec", "num_symbols"), "4", r"prior.num_symbols must be an integer in \[2, 65536\], got '4'"),
    (("spec", "num_symbols"), 10**9, r"prior.num_symbols must be an integer in \[2, 65536\], got 1000000000"),
    (("spec", "embed_dim"), 0, r"prior.embed_dim must be an integer >= 1, got 0"),
    (("spec", "symbols"), "words", r"prior.symbols must be one of \['pixels', 'codes'\], got 'words'"),
    (("spec", "num_classes"), 0, r"prior.num_classes must be an integer >= 1 or None, got 0"),
    (("name",), "pixelcnm", r"unknown prior 'pixelcnm'"),
    (("name",), DELETE, r"a prior config must be a dict with the keys \['arch', 'name', 'spec'\]"),
]


@pytest.mark.parametrize("keys, value, message", BAD_CONFIG, ids=lambda v: str(v)[:20])
def test_a_bad_config_value_is_named_before_anything_is_allocated(keys, value, message, tmp_path):
    saved_prior(tmp_path)
    edit_config(tmp_path, ("config", *keys), value)
    with pytest.raises(NotAModelError, match=r"config.json does not describe|model.safetensors does not match") as e:
        load(tmp_path)
    assert e.match(message)


@pytest.mark.parametrize("key, value, message", [
    ("beta", math.nan, r"vqvae.beta must be a finite number >= 0, got nan"),
    ("decay", 1.5, r"vqvae.decay must be a finite number in \[0, 1\), got 1.5"),
    ("codebook_update", "sgd", r"vqvae.codebook_update must be one of \['ema', 'loss'\], got 'sgd'"),
    ("res_blocks", -1, r"vqvae.res_blocks must be an integer in \[0, 1024\], got -1"),
    ("hierarchical", 1, r"vqvae.hierarchical must be true or false, got 1"),
])
def test_a_bad_vqvae_config_value_is_named(key, value, message, tmp_path):
    latentar.VQVAE((1, 8, 8), preset="tiny").save(tmp_path)
    edit_config(tmp_path, ("config", "config", key), value)
    with pytest.raises(NotAModelError, match=message):
        load(tmp_path)


@pytest.mark.parametrize("kwargs, message", [
    (dict(shape=(1, 2.5, 4)), r"prior.shape must be a list of 3 integers >= 1, got \(1, 2.5, 4\)"),
    (dict(num_symbols=4.0), r"prior.num_symbols must be an integer in \[2, 65536\], got 4.0"),
    (dict(symbols="codes", embed_dim=0), r"prior.embed_dim must be an integer >= 1, got 0"),
    (dict(hidden="big"), r"pixelcnn.hidden must be an integer >= 1, got 'big'"),
    (dict(hidden=-4), r"pixelcnn.hidden must be an integer >= 1, got -4"),
    (dict(hidden=10**6), r"prior 'pixelcnn' would hold 1.82e\+14 weights and buffer values, more than the 4.29e\+09"),
    (dict(name="pixelcnn_pp", dropout=math.inf), r"pixelcnn_pp.dropout must be a finite number in \[0, 1\), got inf"),
    (dict(name="pixelsnail", res_units=-1), r"pixelsnail.res_units must be an integer in \[0, 1024\], got -1"),
    (dict(name="pixelcnn_pp", head="logistic_mixture", head_options={"num_mixtures": 2.0}),
     r"logistic_mixture.num_mixtures must be an integer >= 1, got 2.0"),
])
def test_bad_build_arguments_are_named_before_anything_is_allocated(kwargs, message):
    args = {"name": "pixelcnn", "shape": (1, 4, 4), "num_symbols": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        latentar.build_prior(**args)


def test_vqvae_image_shape_and_levels_are_checked():
    with pytest.raises(FieldError, match=r"vqvae.image_shape must be a list of 3 integers >= 1, got \(1, 8.5, 8\)"):
        latentar.VQVAE((1, 8.5, 8), preset="tiny")
    with pytest.raises(FieldError, match=r"vqvae.levels must be an integer in \[2, 256\], got 300"):
        latentar.VQVAE((1, 8, 8), preset="tiny", levels=300)


def test_non_finite_weights_are_never_saved_nor_loaded(tmp_path):
    prior = tiny_prior("pixelcnn", (1, 3, 3), 4)
    with torch.no_grad():
        prior.blocks[0].layers[1].bias[0] = math.nan
        prior.blocks[1].layers[1].bias[0] = math.inf
    with pytest.raises(NonFiniteWeightsError, match=r"NaN or inf: blocks.0.layers.1.bias, blocks.1.layers.1.bias$"):
        prior.save(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    folder = saved_prior(tmp_path / "good")  # then made NaN by someone who also fixed the checksum
    save_file({k: v.contiguous() for k, v in prior.state_dict().items()}, str(folder / WEIGHTS_FILE))
    edit_config(folder, ("weights_sha256",), hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest())
    with pytest.raises(NotAModelError, match=r"holds NaN or inf weights.*refusing to load blocks.0.layers.1.bias, "
                                             r"blocks.1.layers.1.bias$"):
        load(folder)


def test_format_versions(tmp_path):
    prior = tiny_prior("pixelcnn", (1, 3, 3), 4)
    prior.save(tmp_path)
    edit_config(tmp_path, ("weights_sha256",), DELETE)
    with pytest.raises(NotAModelError, match="no 'weights_sha256' entry, which format 2 requires"):
        load(tmp_path)
    edit_config(tmp_path, ("format_version",), 1)  # written before checksums were recorded
    with pytest.warns(UserWarning, match="format 1, which records no sha256.*cannot be verified"):
        assert same_weights(load(tmp_path), prior)
    edit_config(tmp_path, ("format_version",), 3)
    with pytest.raises(NotAModelError, match="format_version 3; this latentar reads versions 1 to 2"):
        load(tmp_path)


def test_weights_of_another_model_are_named_by_tensor(tmp_path):
    saved_prior(tmp_path / "a")
    tiny_prior("pixelcnn", (1, 3, 3), 4, num_classes=3).save(tmp_path / "b")
    (tmp_path / "b" / WEIGHTS_FILE).replace(tmp_path / "a" / WEIGHTS_FILE)
    with pytest.raises(NotAModelError, match=r"does not match the model config.json describes; "
                                             r"unexpected: class_bias.weight"):
        load(tmp_path / "a", verify=False)


def test_extra_files_in_a_model_folder_are_ignored(tmp_path):
    saved_prior(tmp_path)
    write_codes_source(tmp_path, "0123456789abcdef", "codes")
    assert isinstance(load(tmp_path), latentar.Prior)


# ---- hostile and half-written folders --------------------------------------------------
@pytest.mark.parametrize("damage, message", [
    (lambda path: path.write_text("[" * 200_000 + "]" * 200_000), "nested too deeply"),
    (lambda path: path.write_text(" " * (2 << 20) + "{}"), "larger than the 1048576 bytes"),
    (lambda path: path.write_bytes(b"\xff\xfe{}"), "is not UTF-8 text"),
    (lambda path: path.write_text('{"a": ' + "9" * 5000 + "}"), "is not valid JSON: Exceeds the limit"),
    (lambda path: (path.unlink(), path.symlink_to("/dev/zero")), "is a symbolic link"),
])
def test_a_hostile_config_is_refused_naming_it(tmp_path, damage, message):
    folder = saved_prior(tmp_path / "m")
    damage(folder / CONFIG_FILE)
    with pytest.raises(NotAModelError, match=message) as error:
        load(folder)
    assert str(folder / CONFIG_FILE) in str(error.value)


@pytest.mark.parametrize("special", ["link", "fifo"])
def test_weights_that_are_not_a_regular_file_are_refused_unread(tmp_path, special):
    folder = saved_prior(tmp_path / "m")
    elsewhere = tmp_path / "elsewhere.safetensors"
    (folder / WEIGHTS_FILE).rename(elsewhere)
    (folder / WEIGHTS_FILE).symlink_to(elsewhere) if special == "link" else os.mkfifo(folder / WEIGHTS_FILE)
    with pytest.raises(NotAModelError, match="is not a regular file"):
        load(folder)


def test_unknown_top_level_config_keys_are_refused(tmp_path):
    folder = saved_prior(tmp_path / "m")
    edit_config(folder, ["licence"], "mine")
    with pytest.raises(NotAModelError, match=r"unknown top-level key\(s\) \['licence'\]"):
        load(folder)


def test_saved_files_get_the_usual_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        folder = saved_prior(tmp_path / "m")
    finally:
        os.umask(umask)
    assert {stat.S_IMODE((folder / name).stat().st_mode) for name in (CONFIG_FILE, WEIGHTS_FILE)} == {0o644}


def test_temporaries_left_by_a_killed_writer_are_removed_at_the_next_write(tmp_path):
    folder = saved_prior(tmp_path / "m")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = folder / f".{CONFIG_FILE}.{dead.pid}.abcdef12.tmp"
    live = folder / f".{WEIGHTS_FILE}.{os.getpid()}.0123abcd.tmp"  # a writer that still runs: kept
    users = folder / f".notes.{dead.pid}.v2.tmp"  # not a name latentar writes: kept
    for path in (stale, live, users):
        path.write_text("half")
    saved_prior(folder)
    assert not stale.exists() and live.exists() and users.exists()


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    folder = saved_prior(tmp_path / "m")
    before = (folder / CONFIG_FILE).read_bytes()

    def full(fd, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(files.WriteError, match=rf"cannot write {folder / WEIGHTS_FILE}: No space left on device"):
        saved_prior(folder)
    monkeypatch.undo()
    assert (folder / CONFIG_FILE).read_bytes() == before and load(folder) is not None
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])


def test_config_and_card_record_the_versions_that_saved_the_model(tmp_path):
    folder = saved_prior(tmp_path / "m")
    assert json.loads((folder / CONFIG_FILE).read_text())["written_by"] == {"latentar": latentar.__version__,
                                                                             "torch": torch.__version__}
    edit_config(folder, ["written_by"], DELETE)  # folders saved before versions were recorded still load
    assert load(folder, verify=False) is not None


def test_the_model_card_records_the_versions(tmp_path):
    from latentar.model_card import write_model_card

    prior = tiny_prior("pixelcnn", (1, 3, 3), 4)
    card = write_model_card(tmp_path, prior).read_text()
    assert f"| latentar version | {latentar.__version__} |" in card
    assert f"| torch version | {torch.__version__} |" in card
