"""Progress bars: shown on a terminal, on the main process, unless quiet; and every long piece of
work (training, encoding, scoring, sampling, completion, fetching) shows one."""

from __future__ import annotations

import gzip
import hashlib
import io
import sys

import pytest
import torch
from prior_cases import tiny_pixelcnn
from torch.utils.data import TensorDataset

import latentar
from latentar import progress
from latentar.cli import main
from latentar.data.codes import encode_dataset
from latentar.data.sources import IdxSource, fetch_idx
from latentar.evaluation import evaluate_prior, evaluate_vqvae
from latentar.generation import complete


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def terminal(monkeypatch) -> Terminal:
    """Make stderr a terminal for the rest of the test; returns it (its text is what the bars drew).
    Called in the test itself: pytest sets its own stderr between a test's setup and its call."""
    monkeypatch.setattr(progress, "_quiet", False)
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def count_to_three() -> None:
    for _ in progress.progress_bar(range(3), desc="counting"):
        pass


def test_a_bar_shows_on_a_terminal_only(monkeypatch):
    stderr = terminal(monkeypatch)
    count_to_three()
    assert "counting" in stderr.getvalue() and "0/3" in stderr.getvalue()
    pipe = io.StringIO()  # not a terminal: a log file, a pipe
    monkeypatch.setattr(sys, "stderr", pipe)
    count_to_three()
    assert pipe.getvalue() == ""


def test_quiet_and_other_processes_show_no_bar(monkeypatch):
    stderr = terminal(monkeypatch)
    progress.set_quiet(True)
    count_to_three()
    progress.set_quiet(False)
    monkeypatch.setattr(progress, "is_main_process", lambda: False)
    count_to_three()
    assert stderr.getvalue() == ""


def test_the_main_process_is_known_before_accelerate_sets_up_the_processes(monkeypatch):
    monkeypatch.setattr(progress.PartialState, "_shared_state", {})
    monkeypatch.setenv("RANK", "1")
    assert not progress.is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert progress.is_main_process()


def test_sampling_completion_and_scoring_show_bars(monkeypatch):
    stderr = terminal(monkeypatch)
    prior = tiny_pixelcnn()
    prior.sample(2)
    assert "sample" in stderr.getvalue() and "0/16" in stderr.getvalue()  # one step per position of the order
    complete(prior, torch.zeros(1, 1, 4, 4, dtype=torch.uint8), keep_rows=2, samples=1)
    assert "complete" in stderr.getvalue()
    x = torch.randint(0, 2, (6, 1, 4, 4))
    evaluate_prior(prior, TensorDataset(x, torch.zeros(6, dtype=torch.long)), batch_size=2)
    assert "score" in stderr.getvalue() and "0/3" in stderr.getvalue()


def test_encoding_and_scoring_a_vqvae_show_bars(monkeypatch, tmp_path):
    stderr = terminal(monkeypatch)
    vqvae = latentar.VQVAE((1, 8, 8), preset="tiny").eval()
    images = TensorDataset(torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    encode_dataset(vqvae, images, tmp_path, "train", batch_size=2)
    assert "encode train" in stderr.getvalue()
    evaluate_vqvae(vqvae, images, batch_size=2)
    assert "score reconstructions" in stderr.getvalue()


def test_fetching_shows_a_bar(monkeypatch, tmp_path):
    stderr = terminal(monkeypatch)
    files = {name: gzip.compress(name.encode()) for name in ("a.gz", "b.gz")}
    source = IdxSource(name="toy", folder="toy", sha256={n: hashlib.sha256(b).hexdigest() for n, b in files.items()},
                       hash_decompressed=False, origin="here", fetcher=lambda source, dest: "nowhere")
    (tmp_path / "toy").mkdir()
    for name, data in files.items():
        (tmp_path / "toy" / name).write_bytes(data)
    assert fetch_idx(source, tmp_path)["status"] == "already present"
    assert "check toy" in stderr.getvalue() and "0/2" in stderr.getvalue()


@pytest.mark.parametrize("where", ["before", "after"])
def test_the_command_line_quiet_flag_silences_the_bars(monkeypatch, tmp_path, where):
    stderr = terminal(monkeypatch)
    tiny_pixelcnn().save(tmp_path / "prior")
    command = ["sample", "--prior", str(tmp_path / "prior"), "-n", "2", "--out", str(tmp_path / "s.png")]
    assert main(command) == 0
    assert "sample" in stderr.getvalue() and "0/16" in stderr.getvalue()  # the prior's 16 positions
    stderr.truncate(0)
    stderr.seek(0)
    assert main(["--quiet", *command] if where == "before" else [*command, "--quiet"]) == 0
    assert stderr.getvalue() == ""
