"""The trainer: per-update LR schedules, EMA, metrics, checkpoints, exact resume, export,
gradient accumulation, the non-finite guard, and a two-process run scored like a one-process
one. Damaged checkpoints and interrupted writes are in test_faults.py."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

import latentar
from latentar.evaluation import evaluate_prior
from latentar.training import (
    TrainConfig,
    Trainer,
    lr_factor,
    make_ema,
    make_scheduler,
    prior_objective,
    read_done,
    read_metrics,
    update_ema,
)
from latentar.training.config import check_mixed_precision
from latentar.training.trainer import NonFiniteLossError

LR, DECAY = 1e-2, 0.98


def striped_grids(n: int, seed: int = 0) -> TensorDataset:
    """Binary 1×4×4 grids: horizontal stripes, each grid inverted with probability 1/2
    (so the data carries exactly 1 bit per grid: 1/16 bit per dimension)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    x[:, :, ::2] = 1
    flip = torch.rand(n, generator=g) < 0.5
    x[flip] = 1 - x[flip]
    return TensorDataset(x, torch.zeros(n, dtype=torch.long))


def tiny_pixelcnn() -> latentar.Prior:
    torch.manual_seed(0)
    return latentar.build_prior("pixelcnn", (1, 4, 4), 2, preset="tiny")


def config(**overrides) -> TrainConfig:
    values = dict(steps=40, batch_size=16, lr=LR, lr_schedule="exponential", lr_decay=DECAY,
                  ema_decay=0.9, save_every=10, log_every=1)
    return TrainConfig(**{**values, **overrides})


def train(out: Path, resume: bool = False, objective=prior_objective, **overrides) -> Trainer:
    data = striped_grids(64)
    trainer = Trainer(tiny_pixelcnn(), objective, data, config(**overrides), out,
                      evaluate=lambda model, acc: evaluate_prior(model, data, acc))
    trainer.fit(resume=resume)
    return trainer


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[Trainer, Path]:
    out = tmp_path_factory.mktemp("full")
    return train(out), out


# ---- schedules and EMA -------------------------------------------------------------
def test_lr_factors_match_hand_computed_values():
    assert [lr_factor("constant", steps=4)(k) for k in range(4)] == [1.0] * 4
    assert [lr_factor("exponential", steps=4, lr_decay=0.5)(k) for k in range(4)] == [1, 0.5, 0.25, 0.125]
    cosine = lr_factor("cosine", steps=6, warmup_steps=2)  # warm-up 1/2, 1; then 4 cosine updates
    expected = [0.5, 1.0, 1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2]
    assert [cosine(k) for k in range(6)] == pytest.approx(expected, abs=1e-12)


def test_scheduler_steps_the_optimizer_lr_per_update():
    optimizer = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = make_scheduler(optimizer, TrainConfig(steps=5, lr=0.1, lr_schedule="exponential", lr_decay=0.5))
    seen = []
    for _ in range(3):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.1, 0.05, 0.025])


def test_ema_matches_hand_computed_average_and_copies_buffers():
    model = nn.Linear(1, 1, bias=False)
    model.register_buffer("counter", torch.zeros(1))
    ema = make_ema(model, decay=0.75)
    expected = {2.0: 2.0, 6.0: 0.75 * 2 + 0.25 * 6, 10.0: 0.75 * 3 + 0.25 * 10}  # the first update copies
    for value, average in expected.items():
        with torch.no_grad():
            model.weight.fill_(value)
            model.counter.add_(1)
        update_ema(ema, model)
        assert ema.module.weight.item() == pytest.approx(average)
        assert torch.equal(ema.module.counter, model.counter)


BAD_CONFIGS = [("steps", dict(steps=0)), ("lr", dict(lr=0.0)), ("lr_schedule", dict(lr_schedule="linear")),
               ("grad_accum", dict(grad_accum=0)), ("mixed_precision", dict(mixed_precision="fp8")),
               ("ema_decay", dict(ema_decay=1.0)), ("warmup_steps", dict(warmup_steps=5, steps=5)),
               ("batch_size", dict(batch_size=2.5)), ("log_every", dict(log_every=0)),
               ("lr", dict(lr=math.inf)), ("lr", dict(lr=math.nan)), ("lr", dict(lr="big")),
               ("lr_decay", dict(lr_decay=math.nan)), ("grad_clip", dict(grad_clip=math.inf)),
               ("ema_decay", dict(ema_decay=math.nan)), ("max_nonfinite", dict(max_nonfinite=0))]


@pytest.mark.parametrize("field, bad", BAD_CONFIGS)
def test_train_config_rejects_bad_values(field, bad):
    with pytest.raises(ValueError, match=f"TrainConfig.{field} must be .*, got {re.escape(repr(bad[field]))}"):
        TrainConfig(**bad)


def test_fp16_on_a_cpu_is_refused_with_a_pointer_to_bf16(tmp_path):
    check_mixed_precision("fp16", "cuda:0")
    check_mixed_precision("bf16", "cpu")
    with pytest.raises(ValueError, match="fp16' cannot be used on a CPU.*'bf16'"):
        check_mixed_precision("fp16", torch.device("cpu"))
    if torch.cuda.is_available():
        pytest.skip("the trainer may train on the GPU here, where fp16 works")
    with pytest.raises(ValueError, match="fp16' cannot be used on a CPU"):
        Trainer(tiny_pixelcnn(), prior_objective, striped_grids(64), config(mixed_precision="fp16"), tmp_path)


# ---- one tiny run ------------------------------------------------------------------
def test_training_lowers_the_loss_and_logs_every_update(full_run):
    _, out = full_run
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, 41))
    assert records[-1]["eval"] == read_done(out)["eval"]  # the last line holds the final evaluation
    first = sum(r["loss"] for r in records[:5]) / 5
    last = sum(r["loss"] for r in records[-5:]) / 5
    assert last < 0.5 * first
    assert records[-1]["bits_per_dim"] == pytest.approx(records[-1]["loss"] / math.log(2))
    # the LR decays once per update, not per epoch (an epoch here is 4 updates)
    assert [r["lr"] for r in records] == pytest.approx([LR * DECAY ** k for k in range(40)])


def test_run_keeps_the_last_two_checkpoints_and_marks_itself_done(full_run):
    trainer, out = full_run
    assert [p.name for p in trainer.checkpoints()] == ["step_00000030", "step_00000040"]
    files = sorted(p.name for p in trainer.checkpoints()[-1].iterdir())  # nothing of ours is pickled
    assert files == ["ema.safetensors", "manifest.json", "model.safetensors", "optimizer.bin",
                     "random_states_0.pkl", "scheduler.bin", "trainer_state.json"]
    state = json.loads((trainer.checkpoints()[-1] / "trainer_state.json").read_text())
    assert state == {"format_version": 2, "step": 40, "nonfinite_streak": 0, "skipped_updates": 0, "window": {}}
    assert not list((out / "checkpoints").glob("*.partial"))
    done = read_done(out)
    assert done["step"] == 40
    assert done["eval"]["bits_per_dim"] < 0.2  # the data holds 1/16 bit per dimension
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(out)


def test_exported_model_is_the_ema_model(full_run):
    trainer, out = full_run
    loaded = latentar.load(out / "model")
    x = striped_grids(64).tensors[0].long()
    ema = trainer.final_model().eval()
    assert ema is not trainer.model
    assert torch.equal(loaded.log_prob(x), ema.log_prob(x))
    assert not torch.equal(loaded.log_prob(x), trainer.model.eval().log_prob(x))
    assert read_done(out)["eval"]["nats"] == pytest.approx(-ema.log_prob(x).sum().item(), rel=1e-6)


def test_resume_mid_epoch_continues_exactly(full_run, tmp_path):
    full, full_out = full_run
    train(tmp_path, steps=22)  # stops after 5.5 epochs; its last checkpoint is step 22
    resumed = train(tmp_path, resume=True, steps=40)
    for a, b in [(resumed.model, full.model), (resumed.final_model(), full.final_model())]:
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), name
    assert [r["step"] for r in read_metrics(tmp_path)] == list(range(1, 41))
    assert [r["step"] for r in read_metrics(tmp_path) if "eval" in r] == [22, 40]  # each session's final one
    again = train(tmp_path, resume=True, steps=40)  # a finished run: nothing to train, same export
    for key in ("loss", "lr"):
        assert read_done(tmp_path)["train"][key] == pytest.approx(read_done(full_out)["train"][key], abs=1e-6)
    assert torch.equal(again.model.first.weight, full.model.first.weight)
    losses = [r["loss"] for r in read_metrics(tmp_path)]
    assert losses == pytest.approx([r["loss"] for r in read_metrics(full_out)], abs=1e-6)


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    # two micro-batches of 8 are the two halves of the batch of 16 (same shuffle), and the
    # loss is a mean, so accumulating them gives the same updates
    big = train(tmp_path / "big", steps=4, batch_size=16, save_every=0)
    accumulated = train(tmp_path / "acc", steps=4, batch_size=8, grad_accum=2, save_every=0)
    for p, q in zip(big.model.parameters(), accumulated.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
    assert [r["step"] for r in read_metrics(tmp_path / "acc")] == [1, 2, 3, 4]


def test_stages_with_different_mixed_precision_run_in_one_process(tmp_path):
    bf16 = train(tmp_path / "bf16", steps=3, mixed_precision="bf16", save_every=0)
    assert bf16.accelerator.mixed_precision == "bf16"
    assert math.isfinite(read_done(tmp_path / "bf16")["train"]["loss"])
    full = train(tmp_path / "fp32", steps=3, save_every=0)
    assert full.accelerator.mixed_precision == "no"


def test_a_too_small_training_set_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="fewer than one batch"):
        Trainer(tiny_pixelcnn(), prior_objective, striped_grids(8), config(), tmp_path)


# ---- the non-finite guard ----------------------------------------------------------
class PoisonedObjective:
    """``prior_objective`` with a non-finite loss (or finite loss, non-finite gradients) at the
    chosen micro-batch calls (0-based); records the first weight tensor at every call."""

    def __init__(self, poisoned, kind: str = "loss"):
        self.poisoned, self.kind, self.calls, self.weights = poisoned, kind, 0, []

    def __call__(self, prior, batch):
        first = next(prior.parameters())
        self.weights.append(first.detach().clone())
        loss, metrics = prior_objective(prior, batch)
        if self.poisoned(self.calls):
            # sqrt at 0: a finite value whose gradient is inf · 0 = nan
            loss = loss * math.nan if self.kind == "loss" else loss + torch.sqrt(0 * first.sum())
        self.calls += 1
        return loss, metrics


@pytest.mark.parametrize("kind, grad_accum, grad_clip", [("loss", 2, None), ("gradient", 1, None),
                                                         ("gradient", 1, 1.0)])
def test_a_non_finite_update_is_skipped_counted_and_warned(kind, grad_accum, grad_clip, tmp_path):
    objective = PoisonedObjective(lambda call: call == grad_accum, kind)  # the first micro-batch of update 2
    with pytest.warns(RuntimeWarning, match="update 2: the loss or its gradients are not finite"):
        trainer = train(tmp_path, objective=objective, steps=4, batch_size=16 // grad_accum, grad_accum=grad_accum,
                        grad_clip=grad_clip, save_every=0)
    weights = objective.weights[::grad_accum]  # at the start of updates 1..4
    assert not torch.equal(weights[0], weights[1])  # update 1 changed the weights
    assert torch.equal(weights[1], weights[2])  # update 2 did not
    assert not torch.equal(weights[2], weights[3])  # and update 3 did again
    records = read_metrics(tmp_path)
    assert "loss" not in records[1] and records[1]["skipped_updates"] == 1
    assert [r["lr"] for r in records] == pytest.approx([LR * DECAY ** k for k in range(4)])  # the schedule goes on
    assert math.isfinite(read_done(tmp_path)["train"]["loss"]) and read_done(tmp_path)["train"]["skipped_updates"] == 1
    state = json.loads((trainer.checkpoints()[-1] / "trainer_state.json").read_text())
    assert state["skipped_updates"] == 1 and state["nonfinite_streak"] == 0


def test_non_finite_updates_in_a_row_stop_the_run_and_keep_the_last_checkpoint(tmp_path):
    objective = PoisonedObjective(lambda call: call >= 2)  # updates 3, 4, ...
    with pytest.warns(RuntimeWarning), pytest.raises(
            NonFiniteLossError, match=r"stopped at update 4: .* 2 updates in a row .*step_00000002, is kept.*--lr"):
        train(tmp_path, objective=objective, steps=8, save_every=2, max_nonfinite=2)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000002"]
    assert not (tmp_path / "model").exists() and read_done(tmp_path) is None


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    trainer = train(tmp_path, steps=2, save_every=0)
    with torch.no_grad():
        trainer.model.first.weight.view(-1)[0] = math.inf
    with pytest.raises(NonFiniteLossError, match="at update 2 the weights are not finite, so no checkpoint"):
        trainer.save_checkpoint()
    assert [p.name for p in trainer.checkpoints()] == ["step_00000002"]


# ---- two processes -----------------------------------------------------------------
TWO_PROCESS_TEST_SET = dict(n=13, seed=1)  # 13 items: the processes score 7 and 6


def two_process_worker(rank: int, port: int, out: str) -> None:
    """One of two spawned processes: a rank of a gloo group, as torchrun would set it up."""
    from accelerate.state import AcceleratorState, GradientState

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), ACCELERATE_USE_CPU="true")
    AcceleratorState._reset_state(reset_partial_state=True)  # forget the parent's one-process state
    GradientState._reset_state()
    torch.set_num_threads(1)
    test = striped_grids(**TWO_PROCESS_TEST_SET)
    trainer = Trainer(tiny_pixelcnn(), prior_objective, striped_grids(64), TrainConfig(steps=3, batch_size=8, lr=1e-2),
                      out, evaluate=lambda model, acc: evaluate_prior(model, test, acc, batch_size=4))
    result = trainer.fit()
    if trainer.accelerator.is_main_process:
        result = dict(result["eval"], processes=trainer.accelerator.num_processes)
        Path(out, "result.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_processes_score_like_one(tmp_path, free_port):
    # spawned, not forked: a fork after torch's thread pool started can hang in the child;
    # `accelerate launch` or torchrun would set up the same environment variables
    port = free_port
    out = tmp_path / "run"
    torch.multiprocessing.start_processes(two_process_worker, args=(port, str(out)), nprocs=2,
                                          start_method="spawn")
    result = json.loads((out / "result.json").read_text())
    assert result["processes"] == 2 and result["count"] == 13
    single = evaluate_prior(latentar.load(out / "model"), striped_grids(**TWO_PROCESS_TEST_SET), batch_size=5)
    assert result["bits_per_dim"] == pytest.approx(single["bits_per_dim"], abs=1e-5)
    assert result["dims"] == single["dims"] == 13 * 16


# ---- real data ---------------------------------------------------------------------
@pytest.mark.network
def test_short_run_on_binarized_mnist_lowers_the_loss(tmp_path):
    from latentar.data import SourceUnavailableError, load_dataset

    try:
        mnist = load_dataset("binarized_mnist", "train")
    except SourceUnavailableError as e:
        pytest.skip(f"MNIST cannot be fetched: {e}")
    prior = latentar.build_prior("pixelcnn", mnist.shape, mnist.num_symbols, preset="tiny")
    trainer = Trainer(prior, prior_objective, Subset(mnist, range(256)),
                      TrainConfig(steps=20, batch_size=16, lr=1e-2, log_every=5), tmp_path)
    trainer.fit()
    losses = [r["loss"] for r in read_metrics(tmp_path)]
    assert losses[-1] < 0.7 * losses[0]


def test_keep_checkpoints_keeps_that_many_and_may_change_on_resume(tmp_path):
    trainer = train(tmp_path, steps=8, save_every=2, keep_checkpoints=3)
    assert [p.name for p in trainer.checkpoints()] == ["step_00000004", "step_00000006", "step_00000008"]
    trainer = train(tmp_path, resume=True, steps=10, save_every=2, keep_checkpoints=1)
    assert [p.name for p in trainer.checkpoints()] == ["step_00000010"]
