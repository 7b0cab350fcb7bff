"""The trainer both stages share: Accelerate, Adam or AdamW, a per-update LR schedule, EMA weights.

    trainer = Trainer(prior, prior_objective, train_set, TrainConfig(steps=2000), "runs/prior",
                      evaluate=lambda model, accelerator: evaluate_prior(model, test_set, accelerator))
    result = trainer.fit(resume=True)   # continues from the newest checkpoint if there is one
    trainer.final_model()               # the EMA (or raw) weights, as a bare model

A run folder holds (every name is in ``latentar.run_files``)::

    metrics.jsonl                  one JSON line per logged update (step, loss, lr, skipped_updates,
                                   items_per_sec, ..., eval); the last update's eval is the final evaluation
                                   (done.json's); the trackers of ``report_to`` get the same numbers
    samples/step_00000500.png      with ``sample_every``: the ``preview`` grid of the EMA (or raw) weights
    logs/                          the trackers' files (see ``latentar.training.tracking``)
    checkpoints/step_00000500/     the newest ``keep_checkpoints`` (see ``latentar.training.checkpoint``):
                                   accelerator.save_state (model.safetensors, Adam, LR schedule, RNG
                                   states), trainer_state.json (update counter, non-finite streak),
                                   ema.safetensors, and manifest.json (size and sha256 of each file)
    model/                         the exported model (config.json + model.safetensors + README.md,
                                   its model card)
    done.json                      written last: the stage finished, with its final metrics
    run.json, .lock                what trains here, and who does (see ``latentar.training.run_folder``)

Data order is a function of (seed, epoch) only, so a resumed run sees the same batches,
in the same order, as an uninterrupted one, and ends with the same weights.

Nothing is unpickled on resume beyond tensors and plain containers: the trainer's own
state is JSON + safetensors, and Accelerate's files are read with ``weights_only=True``.
A checkpoint whose files do not match its manifest, or do not load, is reported by name
and the next older one is used.

An update with a non-finite loss or gradients is skipped (and counted); ``max_nonfinite``
of them in a row stop the run with ``NonFiniteLossError``, and weights that are not finite
are never checkpointed or exported.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import get_int_from_env, send_to_device, set_seed
from torch import nn
from torch.utils.data import Dataset

from latentar.files import atomic_write_bytes, atomic_write_json
from latentar.images import save_image
from latentar.model_card import write_model_card
from latentar.progress import progress_bar
from latentar.run_files import CHECKPOINTS_DIR, DONE_FILE, LOGS_DIR, METRICS_FILE, MODEL_DIR, SAMPLES_DIR, read_metrics
from latentar.saving import Saveable
from latentar.training.batches import ShuffledBatches
from latentar.training.checkpoint import Checkpoints, TrainerState
from latentar.training.config import TrainConfig, check_mixed_precision
from latentar.training.ema import make_ema, update_ema
from latentar.training.metrics import MetricWindow, append_line
from latentar.training.optimizers import make_optimizer
from latentar.training.run_folder import claim_run, run_record
from latentar.training.schedules import make_scheduler
from latentar.training.tracking import (
    accelerator_options,
    end_trackers,
    log_hparams,
    log_image,
    log_record,
    start_trackers,
)

Objective = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]
Evaluate = Callable[[nn.Module, Accelerator], dict]
Preview = Callable[[nn.Module], torch.Tensor]  # the model (EMA weights) -> a grid image uint8 (C, H, W)

class NonFiniteLossError(ValueError):
    """Training diverged: too many updates in a row with a non-finite loss or gradients, or
    non-finite weights about to be saved."""


class Trainer:
    """Trains ``model`` by minimising ``objective(model, batch)`` over ``train_data``.

    ``evaluate(model, accelerator) -> dict`` runs on every process every
    ``config.eval_every`` updates and at the end, on the EMA weights when EMA is on.
    ``config.batch_size`` is per process: one update sees batch_size · processes · grad_accum items.
    ``preview(model) -> uint8 (C, H, W)`` draws the grid written every ``config.sample_every``
    updates (main process); ``dataset`` names the data in the exported model's card.
    """

    def __init__(self, model: nn.Module, objective: Objective, train_data: Dataset, config: TrainConfig,
                 out_dir: str | Path, *, evaluate: Evaluate | None = None, overwrite: bool = False,
                 preview: Preview | None = None, dataset: str | None = None):
        self.config, self.out_dir, self.evaluate = config, Path(out_dir), evaluate
        if config.sample_every and preview is None:
            raise ValueError(f"TrainConfig.sample_every = {config.sample_every} needs a preview: "
                             "Trainer(..., preview=...) that draws the grid")
        self.preview, self.dataset = preview, dataset
        self.overwrite = overwrite  # fit replaces an earlier run's outputs in out_dir
        # Accelerate keeps one process-wide state and refuses a second stage's different mixed
        # precision; each Trainer starts its own (the distributed setup, PartialState, is kept).
        AcceleratorState._reset_state(reset_partial_state=False)
        # mixed_precision None: Accelerate's own setting (accelerate launch, ACCELERATE_MIXED_PRECISION)
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=launched_without_cuda(),
                                       gradient_accumulation_steps=config.grad_accum,
                                       step_scheduler_with_optimizer=False,
                                       **accelerator_options(config.report_to, self.out_dir))
        in_effect = self.accelerator.mixed_precision
        check_mixed_precision(config.mixed_precision, self.accelerator.device, in_effect)  # Accelerate would ignore it
        self.config = config = replace(config, mixed_precision=in_effect)  # recorded as used (run.json, model card)
        apply_speed_settings(model, config)
        set_seed(config.seed)
        optimizer = make_optimizer(model.parameters(), config)
        scheduler = make_scheduler(optimizer, config)
        self.net, self.optimizer, self.scheduler = self.accelerator.prepare(
            ObjectiveModule(model, objective), optimizer, scheduler)
        self.model = self.accelerator.unwrap_model(self.net).model  # the bare model, on the device
        self.ema = make_ema(self.model, config.ema_decay) if config.ema_decay is not None else None
        self.state = TrainerState()
        self.window = MetricWindow()  # carried in the checkpoints (TrainerState.window)
        self.checkpointing = Checkpoints(self.out_dir / CHECKPOINTS_DIR, self.accelerator, keep=config.keep_checkpoints)
        self.batches = ShuffledBatches(train_data, config.batch_size, seed=config.seed,
                                       num_processes=self.accelerator.num_processes,
                                       process_index=self.accelerator.process_index,
                                       num_workers=config.num_workers)

    # ---- the loop ------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        """Train to ``config.steps`` updates, export the final model, write done.json; returns
        its content: step, train (the last logged metrics), eval (the final evaluation).

        The run folder is locked for the whole fit and must be this run's (see ``run_folder``):
        a folder holding an earlier run's outputs needs ``resume`` (the same run.json) or the
        trainer's ``overwrite``."""
        lock = claim_run(self.out_dir, run_record(self.model, self.config), self.accelerator,
                         outputs=(CHECKPOINTS_DIR, METRICS_FILE, MODEL_DIR, DONE_FILE, SAMPLES_DIR, LOGS_DIR),
                         resume=resume, overwrite=self.overwrite)
        try:
            return self._fit()
        finally:
            end_trackers(self.accelerator)
            lock.release()

    def _fit(self) -> dict:
        cfg, acc = self.config, self.accelerator
        self._start()
        step = self.state.step
        start_trackers(acc, self.model, cfg, resumed_at=step)
        data = self.batches.iterate(start=step * cfg.grad_accum)
        window = self.window
        bar = progress_bar(total=cfg.steps, initial=step, desc="train", unit="update", leave=True)
        # the last logged training metrics (a resumed run that has nothing left to do keeps them)
        last_train = next(({k: v for k, v in r.items() if k not in ("step", "eval")}
                           for r in reversed(read_metrics(self.out_dir)) if "loss" in r), {})
        record: dict = {}  # the last line logged; its eval, at the last update, is the final evaluation
        while step < cfg.steps:
            self.net.train()
            lr = self.optimizer.param_groups[0]["lr"]
            with window.timed():  # items_per_sec: the updates' time, not the evaluations' or previews'
                self._update(data, window)
            step = self.state.step
            bar.update(1)
            record = {}
            if step % cfg.log_every == 0 or step == cfg.steps:
                last_train = {**window.result(acc), "lr": lr, "skipped_updates": self.state.skipped_updates}
                record = dict(last_train)
                if "loss" in record:
                    bar.set_postfix(loss=f"{record['loss']:.4f}")
            if self.evaluate is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
                record["eval"] = self.run_evaluate()  # at the last update: the final evaluation
            if record:
                self._log({"step": step, **record})
            if cfg.sample_every and (step % cfg.sample_every == 0 or step == cfg.steps):
                self._preview(step)
            if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps:
                self.save_checkpoint()
        bar.close()
        return self._finish(step, last_train, record.get("eval"))

    def _update(self, data, window: MetricWindow) -> None:
        """One optimizer update over ``grad_accum`` micro-batches of ``data``.

        A non-finite micro-batch loss, or non-finite gradients, skip the update: the weights,
        Adam's moments and the EMA stay as they were, while the update counter and the LR
        schedule advance as usual (so data order, schedule and resume do not depend on skips).
        Under fp16 the GradScaler judges the gradients itself (an overflow only lowers its
        scale), so there only a non-finite loss counts. ``max_nonfinite`` skips in a row stop
        the run with ``NonFiniteLossError``. The verdict is gathered on the device across the
        micro-batches and read once per update (one host synchronisation, not one per micro-batch).
        """
        cfg, acc = self.config, self.accelerator
        nonfinite = torch.zeros((), device=acc.device)  # counted on the device across micro-batches
        losses, metrics = [], []
        for _ in range(cfg.grad_accum):
            batch = send_to_device(next(data), acc.device)
            with acc.accumulate(self.net):
                loss, batch_metrics = self.net(batch)
                acc.backward(loss)
            nonfinite += ~torch.isfinite(loss.detach())
            losses.append(loss.detach())
            metrics.append(batch_metrics)
        norm = self._clip_gradients()
        if norm is not None:
            nonfinite += ~torch.isfinite(norm)
        skipped = acc.reduce(nonfinite, reduction="sum").item() > 0  # the same verdict on every process
        if not skipped or acc.scaler is not None:
            self.optimizer.step()
        self.optimizer.zero_grad()
        self.scheduler.step()
        self.state.step += 1
        if skipped:
            self._skipped()
            return
        self.state.nonfinite_streak = 0
        if self.ema is not None:
            update_ema(self.ema, self.model)
        for value, batch_metrics in zip(losses, metrics):
            window.add(value, batch_metrics, cfg.batch_size)

    def _clip_gradients(self) -> torch.Tensor | None:
        """Clip to ``grad_clip`` when set; the global gradient norm before clipping, or None
        under fp16, where the GradScaler checks its scaled gradients itself."""
        acc, clip = self.accelerator, self.config.grad_clip
        norm = acc.clip_grad_norm_(self.net.parameters(), clip) if clip is not None else None
        if acc.scaler is not None:
            return None
        if norm is None:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.net.parameters() if p.grad is not None])
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP2: a sharded DTensor

    def _skipped(self) -> None:
        """Count a skipped update, warn, and stop the run after ``max_nonfinite`` in a row."""
        state, limit = self.state, self.config.max_nonfinite
        state.skipped_updates += 1
        state.nonfinite_streak += 1
        if self.accelerator.is_main_process:
            warnings.warn(f"update {state.step}: the loss or its gradients are not finite; the update is skipped "
                          f"({state.nonfinite_streak} in a row, max_nonfinite={limit})", RuntimeWarning,
                          stacklevel=3)
        if state.nonfinite_streak >= limit:
            raise NonFiniteLossError(
                f"training stopped at update {state.step}: the loss or its gradients were not finite in "
                f"{limit} updates in a row (max_nonfinite={limit}); {self._what_now()}")

    def _what_now(self) -> str:
        """What is kept of a diverged run, and what to change."""
        found, cfg = self.checkpoints(), self.config
        kept = f"the newest checkpoint, {found[-1]}, is kept" if found else "no checkpoint was written"
        clipping = ("gradient clipping (--grad-clip)" if cfg.grad_clip is None
                    else f"a smaller --grad-clip (now {cfg.grad_clip:g})")
        return f"{kept}. Try a lower learning rate (--lr, now {cfg.lr:g}) or {clipping}"

    def _check_finite_weights(self, what: str) -> None:
        """Refuse to write ``what`` from weights (model or EMA) that are not all finite."""
        models = [self.model] if self.ema is None else [self.model, self.ema.module]
        tensors = [t for m in models for t in m.state_dict().values() if t.is_floating_point()]
        if tensors and not torch.stack([torch.isfinite(t).all() for t in tensors]).all().item():
            raise NonFiniteLossError(
                f"at update {self.state.step} the weights are not finite, so no {what} is written; "
                f"{self._what_now()}")

    def final_model(self) -> nn.Module:
        """The bare model to evaluate, sample and export: the EMA copy when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    def run_evaluate(self) -> dict:
        return self.evaluate(self.final_model(), self.accelerator) if self.evaluate is not None else {}

    # ---- checkpoints -----------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Complete checkpoint folders, oldest first."""
        return self.checkpointing.folders()

    def save_checkpoint(self) -> Path:
        """The checkpoint of the current update (see ``checkpoint``), on every process."""
        self._check_finite_weights("checkpoint")
        self.state.window = self.window.gather(self.accelerator)
        return self.checkpointing.save(self.state, self.ema)

    def _start(self) -> None:
        """Resume from the newest usable checkpoint, if any; clear what a crash left behind."""
        resumed = self.checkpointing.resume(self.ema)
        if resumed is not None:
            folder, self.state = resumed
            self.window.restore(self.state.window, main=self.accelerator.is_main_process)
            self.accelerator.print(f"resuming from {folder} at update {self.state.step}")
        if self.accelerator.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.checkpointing.remove_partial()
            keep = read_metrics(self.out_dir, up_to=self.state.step) if resumed else []
            atomic_write_bytes(self.out_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in keep).encode())
        self.accelerator.wait_for_everyone()

    def _log(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            append_line(self.out_dir / METRICS_FILE, json.dumps(record))
            log_record(self.accelerator, record)

    def _preview(self, step: int) -> None:
        """Write samples/step_NNNNNNNN.png, the preview of the EMA (or raw) weights, and track it."""
        assert self.preview is not None  # sample_every needs one (checked when the trainer is made)
        if self.accelerator.is_main_process:
            grid = self.preview(self.final_model())  # uint8 (C, H, W)
            save_image(grid, self.out_dir / SAMPLES_DIR / f"step_{step:08d}.png")
            log_image(self.accelerator, SAMPLES_DIR, grid, step=step)

    def _finish(self, step: int, last_train: dict, final: dict | None) -> dict:
        """Export the model and write done.json. ``final``: the evaluation of the last update's
        metrics.jsonl line, None when this session trained no update (it evaluates again then)."""
        self._check_finite_weights("model")
        scores = final if final is not None else self.run_evaluate()
        result: dict[str, Any] = {"step": step, "train": last_train, "eval": scores}
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            model = self.final_model()
            assert isinstance(model, Saveable), "the trainer trains priors and VQ-VAEs, which save themselves"
            model.save(self.out_dir / MODEL_DIR)
            write_model_card(self.out_dir / MODEL_DIR, model, dataset=self.dataset,
                             training=asdict(self.config), metrics=result["eval"])
            log_hparams(self.accelerator, self.model, self.config, result["eval"])
            atomic_write_json(self.out_dir / DONE_FILE, result)
        self.accelerator.wait_for_everyone()
        return result


# ---- pieces -------------------------------------------------------------------------
class ObjectiveModule(nn.Module):
    """Runs ``objective(model, batch)`` as its forward, so DDP and autocast see the whole loss."""

    def __init__(self, model: nn.Module, objective: Objective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return self.objective(self.model, batch)


def launched_without_cuda() -> bool:
    """Whether this is one of several processes (torchrun, ``accelerate launch``: WORLD_SIZE > 1) on
    a machine without CUDA. Accelerate groups such processes (gloo) only when asked for the CPU
    (``Accelerator(cpu=True)``); otherwise each one believes it trains alone."""
    return not torch.cuda.is_available() and get_int_from_env(["WORLD_SIZE"], 1) > 1


@runtime_checkable
class SpeedSettings(Protocol):
    """What a model with speed settings (a prior) offers the trainer."""

    def set_compile(self, on: bool) -> None: ...

    def set_activation_checkpointing(self, on: bool) -> None: ...

    def set_channels_last(self, on: bool) -> None: ...


def apply_speed_settings(model: nn.Module, config: TrainConfig) -> None:
    """``compile``, ``checkpoint_activations`` and ``channels_last``: settings of a prior
    (``set_compile``, ``set_activation_checkpointing``, ``set_channels_last``); a model without
    them refuses them by name."""
    if not (config.compile or config.checkpoint_activations or config.channels_last):
        return
    if not isinstance(model, SpeedSettings):
        raise ValueError(f"TrainConfig.compile, checkpoint_activations and channels_last apply to priors; "
                         f"a {type(model).__name__} takes none of them")
    model.set_compile(config.compile)
    model.set_activation_checkpointing(config.checkpoint_activations)
    model.set_channels_last(config.channels_last)
