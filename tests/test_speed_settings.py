"""The speed settings change how fast and in how much memory, never what is computed:
``torch.compile`` (no graph break in the compiled region, the same loss and gradients, the
same weight names, resume across the setting), bf16 autocast (heads in float32, a float32
export), activation checkpointing (blocks recomputed, the same gradients), and metrics kept
on the device until they are logged."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from prior_cases import tiny_prior
from torch.utils.data import TensorDataset

import latentar
from latentar.cli import build_parser
from latentar.commands.options import train_config
from latentar.config import RecipeError, recipe_from_dict
from latentar.plan import check_training
from latentar.training import TrainConfig, Trainer, prior_objective, vqvae_objective
from latentar.training.metrics import MetricWindow

CHECKPOINTABLE = ["pixelcnn_pp", "pixelsnail", "lmconv"]


def grads(prior: latentar.Prior, x: torch.Tensor, cond=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss and every parameter's gradient of one backward pass."""
    prior.zero_grad(set_to_none=True)
    loss = prior.loss(x, cond)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in prior.named_parameters() if p.grad is not None}


def assert_same_grads(a: dict, b: dict, **tolerance) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], **tolerance, msg=lambda m: f"{name}: {m}")


# ---- torch.compile -----------------------------------------------------------------------
def test_compiled_region_has_no_graph_break():
    prior = tiny_prior("gated_pixelcnn", (1, 5, 5), 3, num_classes=2).train()
    x = torch.randint(0, 3, (2, 1, 5, 5))
    cond = prior.check_inputs(x, torch.tensor([0, 1]))
    explained = torch._dynamo.explain(type(prior).validated_loss)(prior, x, cond)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_compiled_loss_and_gradients_match_eager():
    prior = tiny_prior("pixelcnn", (1, 5, 5), 2).train()
    x = torch.randint(0, 2, (3, 1, 5, 5))
    eager_loss, eager = grads(prior, x)
    prior.set_compile(True)
    compiled_loss, compiled = grads(prior, x)
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert_same_grads(compiled, eager, rtol=1e-4, atol=1e-6)
    # validation still runs outside the compiled region: bad input gets the usual error
    with pytest.raises(ValueError, match=r"x has symbols in \[2, 2\], expected \[0, 2\)"):
        prior.loss(torch.full((1, 1, 5, 5), 2))


# ---- the trainer with compile: names, export, resume across the setting -------------------
def striped(n: int = 32) -> TensorDataset:
    x = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    x[:, :, ::2] = 1
    x[n // 2:] = 1 - x[n // 2:]
    return TensorDataset(x, torch.zeros(n, dtype=torch.long))


def fit(out, steps: int, compile: bool = False, resume: bool = False, channels_last: bool = False) -> Trainer:
    torch.manual_seed(0)
    prior = latentar.build_prior("pixelcnn", (1, 4, 4), 2, preset="tiny")
    config = TrainConfig(steps=steps, batch_size=8, lr=1e-2, ema_decay=0.9, save_every=2, log_every=1,
                         compile=compile, channels_last=channels_last)
    trainer = Trainer(prior, prior_objective, striped(), config, out)
    trainer.fit(resume=resume)
    return trainer


def test_resume_across_compile_matches_an_uninterrupted_run(tmp_path):
    whole = fit(tmp_path / "whole", 4, compile=False)
    fit(tmp_path / "split", 2, compile=True)
    resumed = fit(tmp_path / "split", 4, compile=False, resume=True)  # written compiled, resumed eager
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    back = fit(tmp_path / "split", 6, compile=True, resume=True)  # and compiled again
    assert back.state.step == 6
    exported = latentar.load(tmp_path / "split" / "model")
    names = list(exported.state_dict())
    assert names == list(whole.model.state_dict()) and not any("_orig_mod" in n for n in names)
    assert all(t.dtype == torch.float32 for t in exported.state_dict().values() if t.is_floating_point())


# ---- channels-last memory format ---------------------------------------------------------
@pytest.mark.parametrize("name", ["pixelcnn_pp", "pixelsnail"])
def test_channels_last_keeps_the_loss_and_gradients(name):
    prior = tiny_prior(name, (1, 5, 5), 3).train()
    x = torch.randint(0, 3, (4, 1, 5, 5))
    torch.manual_seed(0)
    eager_loss, eager = grads(prior, x)
    prior.set_channels_last(True)
    conv = next(p for p in prior.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    torch.manual_seed(0)
    last_loss, last = grads(prior, x)
    torch.testing.assert_close(last_loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert_same_grads(last, eager, rtol=1e-4, atol=1e-6)
    prior.set_channels_last(False)
    assert conv.is_contiguous()


def test_resume_across_channels_last_matches_an_uninterrupted_run(tmp_path):
    whole = fit(tmp_path / "whole", 4)
    fit(tmp_path / "split", 2, channels_last=True)  # checkpoints written from channels-last weights
    resumed = fit(tmp_path / "split", 4, resume=True)
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    back = fit(tmp_path / "split", 6, channels_last=True, resume=True)
    assert back.state.step == 6
    exported = latentar.load(tmp_path / "split" / "model")
    assert list(exported.state_dict()) == list(whole.model.state_dict())
    assert all(t.is_contiguous() for t in exported.state_dict().values())


def test_speed_settings_are_checked_and_refused_where_they_do_not_apply(tmp_path):
    with pytest.raises(ValueError, match="TrainConfig.compile must be true or false, got 'yes'"):
        TrainConfig(compile="yes")
    with pytest.raises(ValueError, match="prior 'pixelcnn' does not support checkpoint_activations"):
        Trainer(tiny_prior("pixelcnn", (1, 4, 4), 2), prior_objective, striped(),
                TrainConfig(steps=2, batch_size=8, checkpoint_activations=True), tmp_path / "a")
    with pytest.raises(ValueError, match="channels_last apply to priors; a VQVAE takes none of them"):
        Trainer(latentar.VQVAE((1, 8, 8), preset="tiny"), vqvae_objective, striped(),
                TrainConfig(steps=2, batch_size=8, compile=True), tmp_path / "b")


def test_train_prior_flags_set_the_speed_settings():
    parse = build_parser().parse_args
    args = parse(["train-prior", "--data", "mnist", "--prior", "pixelsnail", "--out", "x", "--compile",
                  "--checkpoint-activations", "--channels-last", "--mixed-precision", "bf16"])
    config = train_config(args)
    assert config.compile is True and config.checkpoint_activations is True and config.mixed_precision == "bf16"
    assert config.channels_last is True
    config = train_config(parse(["train-prior", "--data", "mnist", "--prior", "pixelsnail", "--out", "x"]))
    assert config.compile is False and config.checkpoint_activations is False and config.channels_last is False


def test_recipes_refuse_speed_settings_that_cannot_apply():
    def check(**sections):
        check_training(recipe_from_dict({"data": {"name": "mnist"}, "prior": {"name": "pixelcnn"}, **sections}),
                       "cpu")

    check(prior_train={"compile": True})
    with pytest.raises(RecipeError, match="prior_train.checkpoint_activations: prior 'pixelcnn' does not support"):
        check(prior_train={"checkpoint_activations": True})
    with pytest.raises(RecipeError, match="vqvae_train.compile: applies to priors only"):
        check(prior_train={}, vqvae={"preset": "tiny"}, vqvae_train={"compile": True})
    with pytest.raises(RecipeError, match="vqvae_train.channels_last: applies to priors only"):
        check(prior_train={}, vqvae={"preset": "tiny"}, vqvae_train={"channels_last": True})


# ---- bf16 autocast -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gated_pixelcnn", "pixelsnail"])
def test_bf16_autocast_keeps_the_likelihood_in_float32(name):
    prior = tiny_prior(name, (1, 5, 5), 4).train()
    x = torch.randint(0, 4, (4, 1, 5, 5))
    exact = prior.loss(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        params = prior(x)
        low = prior.loss(x)
        per_symbol = prior.head.log_prob(params, x)
    assert params.dtype == torch.bfloat16, "the network runs in bf16 under autocast"
    assert low.dtype == per_symbol.dtype == torch.float32, "the head computes the likelihood in float32"
    torch.testing.assert_close(low, exact, rtol=0.03, atol=0.0)  # bf16 has an 8-bit mantissa


# ---- activation checkpointing ------------------------------------------------------------
@pytest.mark.parametrize("name", CHECKPOINTABLE)
def test_checkpointing_recomputes_blocks_and_keeps_the_gradients(name):
    kwargs = {"dropout": 0.3}  # dropout draws again in the recomputation: the RNG must be replayed
    prior = tiny_prior(name, (1, 4, 4), 3, num_classes=2, **kwargs).train()
    x, cond = torch.randint(0, 3, (3, 1, 4, 4)), torch.tensor([0, 1, 1])
    blocks = [m for m in prior.modules() if type(m).__name__ in ("GatedResBlock", "SnailBlock")]
    calls = []
    for block in blocks:
        block.register_forward_pre_hook(lambda *_: calls.append(1))
    torch.manual_seed(5)
    plain_loss, plain = grads(prior, x, cond)
    plain_calls, calls[:] = len(calls), []
    prior.set_activation_checkpointing(True)
    torch.manual_seed(5)
    checkpointed_loss, checkpointed = grads(prior, x, cond)
    assert len(calls) > plain_calls, "checkpointed blocks run again in the backward pass"
    torch.testing.assert_close(checkpointed_loss, plain_loss, rtol=0, atol=0)
    assert_same_grads(checkpointed, plain, rtol=1e-5, atol=1e-7)
    calls[:] = []
    with torch.no_grad():  # no gradient recorded: plain calls (evaluation, sampling)
        prior(x, cond)
    assert len(calls) == plain_calls


# ---- metrics stay on the device ----------------------------------------------------------
def test_metric_window_sums_device_tensors_and_reads_them_once(monkeypatch):
    window = MetricWindow()
    with window.timed():  # updates are timed (items_per_sec counts these blocks only)
        window.add(torch.tensor(1.0), {"bits": torch.tensor(2.0)}, items=4)
        window.add(torch.tensor(3.0), {"bits": 0.5}, items=4)  # plain floats still add
    reads = []
    original = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: (reads.append(1), original(t))[1])

    class OneProcess:
        device = torch.device("cpu")

        def reduce(self, t, reduction):
            return t

    out = window.result(OneProcess())
    assert out["loss"] == 2.0 and out["bits"] == 1.25 and out["items_per_sec"] > 0
    assert len(reads) == 1, "one read of the device sums per log"


def test_vqvae_metrics_are_tensors_until_logged():
    model = latentar.VQVAE((1, 8, 8), preset="tiny")
    _, metrics = model.loss(torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8))
    assert metrics and all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in metrics.values())
    assert float(metrics["psnr"]) == pytest.approx(10 * torch.log10(4 / metrics["mse"]).item())
