"""One error contract: every error a user can cause ends as ``latentar: error: ...`` with
exit status 2, names what was expected and what was given, and comes before any work."""

from __future__ import annotations

import errno
import os

import pytest
import torch
from prior_cases import tiny_prior
from recipe_cases import SMALL_PIXELS, write_recipe

import latentar
from latentar import cli
from latentar.checks import FieldError
from latentar.commands import data as data_command
from latentar.config import load_recipe
from latentar.plan import validate


def run(capsys, *argv) -> tuple[int, str]:
    """cli.main on argv -> (exit status, stderr); argparse's own errors exit too."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.fixture
def recipe(tmp_path, image_folder):
    return write_recipe(tmp_path, image_folder, **SMALL_PIXELS)


@pytest.fixture
def saved_prior(tmp_path):
    """A tiny unconditional pixel prior of (3, 4, 4) images, saved."""
    folder = tmp_path / "prior"
    tiny_prior("pixelcnn", (3, 4, 4), 256).save(folder)
    return folder


# ---- recipes: every section is checked before any work --------------------------------
@pytest.mark.parametrize("override, message", [
    ("sampling.n=0", "sampling.n must be an integer >= 1, got 0"),
    ("sampling.n=-5", "sampling.n must be an integer >= 1, got -5"),
    ("sampling.nrow=0", "sampling.nrow must be an integer in [1, 1024], got 0"),
    ("sampling.per_class=0", "sampling.per_class must be an integer >= 1, got 0"),
    ("sampling.temperature=nan", "sampling.temperature must be a finite number, got nan"),
    ("sampling.temperature=inf", "sampling.temperature must be a finite number, got inf"),
    ("sampling.temperature=0", "sampling.temperature must be a finite number > 0, got 0.0"),
    ("sampling.temperature=-1", "sampling.temperature must be a finite number > 0, got -1.0"),
    ("sampling.top_k=0", "sampling.top_k must be an integer >= 1 or None, got 0"),
    ("sampling.reconstructions=-1", "sampling.reconstructions must be an integer in [0, 4096], got -1"),
    ("sampling.n=lots", "sampling.n must be an integer, got 'lots'"),
    ("prior.arch={hidden = 'big'}", "hidden must be an integer >= 1, got 'big'"),
    ("prior.arch={hidden = -4}", "hidden must be an integer >= 1, got -4"),
    ("prior.embed_dim=0", "prior.embed_dim must be an integer >= 1, got 0"),
    ("prior_train.lr=inf", "lr must be a finite number, got inf"),
    ("data.test_limit=0", "data.test_limit must be an integer >= 1 or None, got 0"),
    ("data.train_limit=0", "data.train_limit must be an integer >= 1 or None, got 0"),
    ("data.train_limit=2", "data.train_limit = 2 holds no whole batch of prior_train.batch_size = 4"),
    ("data.options={size = 'x'}", "data.options: dataset 'image_folder' option size must be an integer in "
                                  "[1, 4096], got 'x'"),
    ("data.options={size = 1000000}", "option size must be an integer in [1, 4096], got 1000000"),
    ("prior.nope=1", "unknown key prior.nope; [prior] takes: name, preset"),
    ("sampling=3", "--set expects section.key=value, got 'sampling=3'"),
    ("sampling.n=1000000000000", "sampling.n = 1000000000000 needs about 432 TB"),  # 3·4·4 int64 + uint8
    ("sampling.seed=99999999999999999999", "sampling.seed must be an integer in [0, 18446744073709551615]"),
    ("prior.arch={hidden = 4611686018427387904}", "prior: prior 'pixelcnn' is too large to build with "
                                                  "pixelcnn.hidden = 4611686018427387904"),
])
def test_a_bad_recipe_value_stops_the_run_before_any_work(capsys, tmp_path, recipe, override, message):
    out = tmp_path / "run"
    code, err = run(capsys, "run", recipe, "--out", out, "--set", override)
    assert code == 2 and err.startswith("latentar: error: ") and message in err, err
    assert not out.exists()  # nothing was trained, nothing was written


def test_every_training_section_is_checked_against_the_device(tmp_path, recipe):
    fp16 = load_recipe(recipe, ["prior_train.mixed_precision=fp16"])
    with pytest.raises(ValueError, match="prior_train.mixed_precision: .*'fp16' cannot be used on a CPU.*bf16"):
        validate(fp16, device="cpu")
    assert validate(fp16, device="cuda").stages[0].train.mixed_precision == "fp16"
    assert validate(load_recipe(recipe, ["prior_train.mixed_precision=bf16"]), device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is a valid choice where CUDA is")
def test_fp16_on_a_cpu_is_refused_before_any_work(capsys, tmp_path, recipe):
    out = tmp_path / "run"
    code, err = run(capsys, "run", recipe, "--out", out, "--set", "prior_train.mixed_precision=fp16")
    assert code == 2 and "use 'bf16'" in err and not out.exists()


# ---- the other commands ---------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["-n", 0], "n (the number of grids to draw) must be an integer >= 1, got 0"),
    (["-n", -5], "must be an integer >= 1, got -5"),
    (["--nrow", 0], "nrow (images per grid row) must be an integer in [1, 1024], got 0"),
    (["--temperature", "nan"], "temperature must be a finite number > 0, got nan"),
    (["--temperature", "inf"], "temperature must be a finite number > 0, got inf"),
    (["--temperature", 0], "temperature must be a finite number > 0, got 0.0"),
    (["--top-k", 0], "top_k must be an integer >= 1 or None, got 0"),
    (["--class", 1], "this prior is unconditional; it takes no class label"),
    (["--out", "{tmp}/afile"], "expected an image file name ending in .png (or .jpg, .bmp, ...), got no extension"),
    (["--out", "{tmp}/grid.pngx"], "got the extension '.pngx'"),
    (["--out", "{tmp}"], "is a folder; expected an image file name"),
    (["--out", "{tmp}/prior/config.json/s.png"], "config.json is a file, expected a folder"),
    (["--vqvae", "{tmp}/prior"], "--vqvae {tmp}/prior holds a PixelCNN, expected a VQ-VAE or a palette"),
    (["-n", 10**12], "sample -n 1000000000000 needs about 432 TB"),
    (["--max-memory", "1KB"], "more than the memory cap of 1 KB (--max-memory 1KB); ask for less, or raise the cap"),
])
def test_sample_rejects_bad_arguments(capsys, tmp_path, saved_prior, argv, message):
    argv = [str(a).format(tmp=tmp_path) for a in argv]
    code, err = run(capsys, "sample", "--prior", saved_prior, "-n", 2, "--out", tmp_path / "s.png", *argv)
    assert code == 2 and err.startswith("latentar: error: ") and message.format(tmp=tmp_path) in err, err
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["--keep-rows", 99], "keep_rows must lie in [0, 4] (pixel rows), got 99"),
    (["--keep-rows", 1, "--samples", 0], "samples must be >= 1, got 0"),
    (["--keep-rows", 1, "-n", 0], "-n must lie in [1, 8]"),
    (["--keep-rows", 1, "--data-option", "size=x"], "option size must be an integer in [1, 4096], got 'x'"),
    (["--keep-rows", 1, "--data-option", "colour=1"], "dataset 'image_folder' has no option colour"),
    (["--keep-rows", 1, "--out", "{tmp}/c"], "expected an image file name"),
    (["--keep-rows", 1, "--samples", 10**12], "completing 8 images × samples=1000000000000 needs about"),
])
def test_complete_rejects_bad_arguments(capsys, tmp_path, image_folder, saved_prior, argv, message):
    argv = [str(a).format(tmp=tmp_path) for a in argv]
    code, err = run(capsys, "complete", "--prior", saved_prior, "--data", "image_folder", "--data-root",
                    image_folder, "--data-option", "size=4", "--out", tmp_path / "c.png", *argv)
    assert code == 2 and err.startswith("latentar: error: ") and message in err, err


@pytest.mark.parametrize("argv, message", [
    (["bench", "train", "--prior", "pixelcnn", "--shape", "1,8"], "shape must be C,H,W with positive integers"),
    (["bench", "train", "--prior", "pixelcnn", "--shape", "1,x,8"], "got '1,x,8'"),
    (["bench", "train", "--prior", "pixelcnn", "--shape", "1,4,4", "--symbols", 1],
     "num_symbols must be an integer in [2, 65536], got 1"),
    (["bench", "train", "--prior", "pixelcnn", "--shape", "1,4,4", "--batch", 0], "need batch >= 1"),
    (["bench", "sample", "--prior", "pixelcnn", "--shape", "1,4,4", "--rows", 0], "rows must lie in [1, 4]"),
    (["receptive-field", "--prior", "pixelcnn", "--shape", "1,x,8", "--out", "{tmp}/f.png"], "got '1,x,8'"),
    (["receptive-field", "--prior", "pixelcnn", "--shape", "1,4,4", "--out", "{tmp}/f"], "image file name"),
    (["receptive-field", "--prior", "pixelcnn", "--shape", "1,4,4", "--scale", 0, "--out", "{tmp}/f.png"],
     "--scale (pixels per grid cell) must be an integer >= 1, got 0"),
    (["eval", "--model", "{tmp}/nothing", "--data", "mnist"], "nothing is not a folder; expected a saved model"),
    (["train-prior", "--data", "mnist", "--prior", "pixelcnn", "--lr", "inf", "--out", "{tmp}/r"],
     "lr must be a finite number, got inf"),
    (["train-prior", "--data", "mnist", "--prior", "pixelcnn", "--eval-batch-size", 0, "--out", "{tmp}/r"],
     "--eval-batch-size must be an integer >= 1, got 0"),
    (["eval", "--model", "{tmp}/nothing", "--data", "mnist", "--batch-size", 0],
     "--batch-size must be an integer >= 1, got 0"),
    (["run", "{tmp}/nowhere.toml"], "nowhere.toml does not exist"),
    (["bench", "train", "--prior", "pixelcnn", "--preset", "tiny", "--shape", "1,100000,100000"],
     "bench train of batch=32 grids (1, 100000, 100000) needs about"),
    (["bench", "sample", "--prior", "pixelcnn", "--preset", "tiny", "--shape", "1,100000,100000"],
     "bench sample of batch=16 grids (1, 100000, 100000) needs about"),
    (["bench", "train", "--prior", "pixelcnn", "--preset", "tiny", "--batch", 10**9, "--max-memory", "8GB"],
     "more than the memory cap of 8 GB (--max-memory 8GB)"),
    (["receptive-field", "--prior", "pixelcnn", "--preset", "tiny", "--shape", "1,100000,100000", "--out",
      "{tmp}/f.png"], "the receptive field from 16 grids (1, 100000, 100000) needs about"),
    (["bench", "train", "--prior", "pixelcnn", "--arch", "hidden=4611686018427387904"],
     "prior 'pixelcnn' is too large to build with pixelcnn.hidden = 4611686018427387904: a tensor size"),
    (["bench", "train", "--prior", "pixelcnn", "--max-memory", "8XB"],
     "argument --max-memory: the value must be a size such as 8GB"),
    (["sample", "--prior", "{tmp}/nothing", "--seed", "99999999999999999999", "--out", "{tmp}/s.png"],
     "argument --seed: the value must be an integer in [0, 18446744073709551615], got '99999999999999999999'"),
    (["train-prior", "--data", "mnist", "--prior", "pixelcnn", "--seed", "99999999999999999999", "--out", "{tmp}/r"],
     "TrainConfig.seed must be an integer in [0, 4294967295], got 99999999999999999999"),
])
def test_commands_reject_bad_arguments(capsys, tmp_path, argv, message):
    code, err = run(capsys, *[str(a).format(tmp=tmp_path) for a in argv])
    assert code == 2 and ": error: " in err and message in err, err
    assert "Traceback" not in err and message in err.strip().splitlines()[-1]  # one line (after argparse's usage)


def test_eval_of_a_vqvae_folder_is_a_user_error(capsys, tmp_path, image_folder):
    from latentar.vqvae import VQVAE

    VQVAE((3, 8, 8), preset="tiny").save(tmp_path / "vq")
    code, err = run(capsys, "eval", "--model", tmp_path / "vq", "--data", "image_folder", "--data-root",
                    image_folder)
    assert code == 2 and "holds a VQVAE; `latentar eval` scores priors" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_read_only_out_is_a_user_error(capsys, tmp_path, recipe, saved_prior):
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    code, err = run(capsys, "run", recipe, "--out", folder / "run")
    assert code == 2 and "Permission denied" in err and str(folder / "run") in err, err
    code, err = run(capsys, "sample", "--prior", saved_prior, "--out", folder / "s.png")
    assert code == 2 and f"the folder {folder} is not writable" in err, err


# ---- which exceptions are the user's ---------------------------------------------------
@pytest.mark.parametrize("error, message", [
    (PermissionError(errno.EACCES, "Permission denied", "/ro/run/.lock"), "Permission denied: /ro/run/.lock"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run"), "Read-only file system: /mnt/ro/run"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "a/file/run"), "Not a directory: a/file/run"),
    (FileExistsError(errno.EEXIST, "File exists", "a", None, "b"), "File exists: a -> b"),
    (KeyError("unknown thing 'x'"), "unknown thing 'x'"),
])
def test_user_errors_become_one_line_and_exit_2(capsys, monkeypatch, error, message):
    monkeypatch.setattr(data_command, "run_data_fetch", lambda args: (_ for _ in ()).throw(error))
    monkeypatch.setattr(cli, "COMMANDS", [data_command.add_data_command])
    code, err = run(capsys, "data", "fetch", "mnist")
    assert code == 2 and err == f"latentar: error: {message}\n"


@pytest.mark.parametrize("error", [OSError(errno.EBADF, "Bad file descriptor"), RuntimeError("a bug"),
                                   ZeroDivisionError("a bug")])
def test_bugs_keep_their_traceback(monkeypatch, error):
    monkeypatch.setattr(data_command, "run_data_fetch", lambda args: (_ for _ in ()).throw(error))
    monkeypatch.setattr(cli, "COMMANDS", [data_command.add_data_command])
    with pytest.raises(type(error)):
        cli.main(["data", "fetch", "mnist"])


# ---- the Python API: symbol grids of any integer dtype, nothing else --------------------
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_log_prob_takes_every_integer_dtype(dtype):
    prior = tiny_prior("pixelcnn", (1, 3, 3), 4)
    x = torch.randint(0, 4, (5, 1, 3, 3))
    assert torch.equal(prior.log_prob(x.to(dtype)), prior.log_prob(x))
    assert torch.equal(prior(x.to(dtype)), prior(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_log_prob_refuses_a_float_or_bool_grid(dtype):
    prior = tiny_prior("pixelcnn", (1, 3, 3), 4)
    with pytest.raises(TypeError, match=rf"x must be an integer tensor \(B, 1, 3, 3\) of symbols, got a {dtype}"):
        prior.log_prob(torch.zeros(2, 1, 3, 3, dtype=dtype))


def test_a_context_must_be_an_integer_map():
    prior = tiny_prior("pixelsnail", (1, 2, 2), 4, symbols="codes", embed_dim=2, context_symbols=3,
                       context_shape=(1, 1))
    x = torch.zeros(2, 1, 2, 2, dtype=torch.long)
    with pytest.raises(TypeError, match=r"context must be an integer tensor \(2, 1, 1\) of symbols"):
        prior.log_prob(x, {"context": torch.zeros(2, 1, 1)})
    with pytest.raises(ValueError, match=r"context symbols must lie in \[0, 3\), got \[0, 3\]"):
        prior.log_prob(x, {"context": torch.tensor([0, 3]).view(2, 1, 1)})
    assert prior.log_prob(x, {"context": torch.zeros(2, 1, 1, dtype=torch.uint8)}).shape == (2,)


@pytest.mark.parametrize("name, field", [("pixelcnn", "num_blocks"), ("gated_pixelcnn", "num_layers"),
                                         ("pixelcnn_pp", "num_blocks"), ("pixelsnail", "num_blocks"),
                                         ("row_lstm", "num_layers"), ("diagonal_bilstm", "num_layers"),
                                         ("transformer", "num_layers")])
def test_a_network_too_deep_to_build_is_refused_before_building(name, field):
    """100000 blocks pass every size check (the weights are small) but take minutes to build."""
    with pytest.raises(FieldError, match=rf"{name}.{field} must be an integer in \[1, 1024\], got 100000"):
        latentar.build_prior(name, (1, 4, 4), 2, preset="tiny", **{field: 100000})
