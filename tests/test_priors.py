"""The bar every registered prior must clear, parametrized over ``latentar.list_priors()``."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import math
import pkgutil
import sys

import pytest
import torch
from prior_cases import all_cases, case_id, case_names, every_grid, generator, head_cases, prior_class, tiny_prior

import latentar
from latentar.heads import CategoricalHead
from latentar.priors import Condition, Prior, PriorSpec
from latentar.priors.engine import Stepper
from latentar.priors.orders import ranks
from latentar.registry import HEADS, PRIORS

CASES = all_cases()
NAMES = latentar.list_priors()
CASE_NAMES = case_names()  # the registered priors and their variants (``prior_cases.VARIANTS``)


# the interface and its parts, the sampling engine, generation orders and known regions, the shared
# base classes of priors and their steppers, the memory estimates, the auxiliaries of composite
# priors: no prior of their own
SUPPORT = {"base", "spec", "condition", "checks", "engine", "orders", "regions", "layer_cache", "recurrent",
           "footprint", "compiling", "auxiliaries"}
# priors with one network over the grid; a composite (``Prior.composite``) chains registered priors,
# which these cases cover, and has no network of its own to take gradients through
NETWORK_CASES = [case for case in CASES if not prior_class(case[0]).composite]


def test_every_module_in_priors_registers_its_prior():
    """A new prior is one file in latentar/priors/: the package registers it by itself."""
    import latentar.priors as package

    modules = {m.name for m in pkgutil.iter_modules(package.__path__)} - SUPPORT
    assert set(NAMES) == modules and NAMES == sorted(NAMES)


def imported_modules(module) -> set[str]:
    """Every ``latentar...`` module that a module imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("latentar")}


@pytest.mark.parametrize("name", NAMES)
def test_every_prior_follows_the_checklist_of_priors_base(name):
    """The checklist in ``latentar/priors/base.py``'s docstring (that the stepper is a fast one,
    drawing what ``naive_sample`` draws, and ``sample`` no override: ``test_fast_sampling.py``)."""
    cls = PRIORS.get(name)
    assert issubclass(cls, Prior) and cls.name == name and dataclasses.is_dataclass(cls.Arch)
    assert {"tiny", "small", "default", "paper"} <= set(cls.presets), f"{name} lacks a preset"
    for preset in cls.presets:
        cls.make_arch(preset)  # every preset names fields of the Arch, with valid values
    source = inspect.getsource(cls.Arch)
    for field in dataclasses.fields(cls.Arch):
        line = next(line for line in source.splitlines() if line.strip().startswith(f"{field.name}:"))
        assert "#" in line, f"{name}.{field.name} has no comment"
    assert (cls.network is not Prior.network or cls.composite) and issubclass(cls.Stepper, Stepper)
    assert all(HEADS.get(head) for head in cls.refused_heads)  # opt-outs name registered heads
    support = {f"latentar.priors.{module}" for module in SUPPORT} | {"latentar.priors", "latentar.checks"}
    outside = {m for m in imported_modules(sys.modules[cls.__module__])
               if m not in support and not m.startswith(("latentar.nn", "latentar.heads"))}
    assert not outside, f"{name} imports {sorted(outside)}: a prior imports nn/, heads/ and priors' support only"


def test_a_prior_opts_out_of_a_head_with_its_reason():
    class Picky(PRIORS.get("pixelcnn")):
        refused_heads = {"logistic_mixture": "a reason of its own"}

    spec = PriorSpec(shape=(1, 2, 2), num_symbols=4, head="logistic_mixture")
    with pytest.raises(ValueError, match="prior 'pixelcnn' does not take head 'logistic_mixture': a reason of its own"):
        Picky(spec, Picky.make_arch("tiny"))
    assert Picky.head_refusal("categorical", 3, "codes") is None


def test_the_shared_cases_follow_what_a_new_head_declares(monkeypatch):
    """``prior_cases`` iterates the head registry: a head registered with its capabilities joins
    every prior that it does not refuse, without an edit to a test."""
    declared = dict(name="whole_rgb", ordinal=True, channel_blocks=False, channel_counts=(3,))
    monkeypatch.setitem(HEADS._entries, "whole_rgb", type("WholeRGB", (CategoricalHead,), declared))
    for name in NAMES:
        expected = not PRIORS.get(name).channel_masked  # whole-pixel params only, C = 3 only
        assert (("whole_rgb", 3) in head_cases(name)) == expected and ("whole_rgb", 1) not in head_cases(name)
    with pytest.raises(ValueError, match="head 'whole_rgb' models ordinal pixels; codes need 'categorical'"):
        latentar.build_prior("transformer", (3, 2, 2), 4, "whole_rgb", symbols="codes", preset="tiny")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_exact_normalization_pixels(case, device):
    name, head, C = case
    shape, K = ((1, 2, 2), 3) if C == 1 else ((3, 1, 1), 4)
    prior = tiny_prior(name, shape, K, head, device=device)
    with torch.no_grad():
        total = prior.log_prob(every_grid(shape, K, device)).exp().sum().item()
    assert abs(total - 1.0) < 1e-5


@pytest.mark.parametrize("name", CASE_NAMES)
def test_exact_normalization_codes_across_rows(name, device):
    shape, K = (1, 2, 3), 3  # W = 3 exposes any look at the upper-right neighbour's future
    prior = tiny_prior(name, shape, K, symbols="codes", embed_dim=4, device=device)
    with torch.no_grad():
        total = prior.log_prob(every_grid(shape, K, device)).exp().sum().item()
    assert abs(total - 1.0) < 1e-5


@pytest.mark.parametrize("case", NETWORK_CASES, ids=case_id)
def test_causality_by_gradients(case, device):
    """d log p(x_{c,h,w}) / d input is exactly zero at and after (h, w, c) in the network's own
    order, nonzero before."""
    name, head, C = case
    H = W = 4
    prior = tiny_prior(name, (C, H, W), 8, head, device=device)
    x = torch.randint(0, 8, (8, C, H, W)).to(device)  # several grids: one grid's dead ReLUs can hide the past
    assert_causal(prior, x, Condition())


def assert_causal(prior: Prior, x: torch.Tensor, cond: Condition) -> None:
    """The gradient check of ``test_causality_by_gradients`` on 8 grids x (8, C, H, W) under ``cond``."""
    _, C, H, W = x.shape
    device = x.device
    z = prior.input(x).detach().requires_grad_()  # (8, C·E, H, W)
    lp = prior.head.log_prob(prior.network(z, cond), x)  # (8, C, H, W)
    rank = ranks(prior.orders[0]).view(H, W)  # the network's own order: raster, or an any-order prior's first
    order = rank * C + torch.arange(C, device=device).view(C, 1, 1)  # (C, H, W): the order, then channel
    for h in range(H):
        for w in range(W):
            for c in range(C):
                (grad,) = torch.autograd.grad(lp[0, c, h, w], z, retain_graph=True)
                assert grad[1:].abs().sum() == 0, "leak across the batch"
                (grad,) = torch.autograd.grad(lp[:, c, h, w].sum(), z, retain_graph=True)
                g = grad.view(8, C, -1, H, W).abs().sum((0, 2))  # (C, H, W)
                target = order[c, h, w]
                assert g[order >= target].sum() == 0, f"symbol {(c, h, w)} sees its own future"
                if rank[h, w] > 0:
                    assert g[order < target].sum() > 0, f"symbol {(c, h, w)} sees no past"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_samples_follow_log_prob(case, device):
    name, head, C = case
    shape, K = ((1, 2, 2), 2) if C == 1 else ((3, 1, 1), 3)
    prior = tiny_prior(name, shape, K, head, device=device)
    n = 4000
    samples = prior.sample(n, generator=generator(device, 0))
    assert samples.shape == (n, *shape) and samples.dtype == torch.long and samples.device == prior.device
    grids = every_grid(shape, K, device)
    with torch.no_grad():
        p = prior.log_prob(grids).exp()
    digits = samples[0].numel()
    index = (samples.flatten(1) * K ** torch.arange(digits - 1, -1, -1, device=device)).sum(1)  # every_grid order
    freq = torch.bincount(index, minlength=len(grids)).float() / n
    tv = 0.5 * (freq - p).abs().sum().item()
    # E[TV] <= 0.5 * sum_i sqrt(p_i (1 - p_i) / n) <= 0.5 * sqrt(M / n); allow 3x that.
    assert tv < 1.5 * math.sqrt(len(grids) / n), f"total variation {tv:.3f}"


@pytest.mark.parametrize("name", NAMES)
def test_sampling_is_reproducible_and_restores_mode(name):
    prior = tiny_prior(name, (1, 3, 3), 4).train()
    a = prior.sample(3, generator=torch.Generator().manual_seed(1))
    b = prior.sample(3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and prior.training


@pytest.mark.parametrize("name", CASE_NAMES)
def test_save_load_round_trip(name, tmp_path, device):
    prior = tiny_prior(name, (3, 4, 4), 16, device=device)
    x = torch.randint(0, 16, (3, 3, 4, 4)).to(device)
    prior.save(tmp_path / "m")
    loaded = latentar.load(tmp_path / "m", device=device).eval()
    assert type(loaded) is type(prior) and loaded.device == prior.device
    with torch.no_grad():
        assert torch.equal(prior.log_prob(x), loaded.log_prob(x))


@pytest.mark.parametrize("name", NAMES)
def test_one_step_lowers_the_loss(name):
    prior = tiny_prior(name, (1, 4, 4), 4)
    x = torch.randint(0, 4, (8, 1, 4, 4))
    opt = torch.optim.Adam(prior.parameters(), lr=1e-3)
    before = prior.loss(x)
    before.backward()
    opt.step()
    with torch.no_grad():
        assert prior.loss(x) < before


@pytest.mark.parametrize("name", NAMES)
def test_class_conditioning_changes_the_distribution(name):
    prior = tiny_prior(name, (1, 3, 3), 4, num_classes=3)
    x = torch.randint(0, 4, (4, 1, 3, 3))
    with torch.no_grad():
        lp0 = prior.log_prob(x, torch.zeros(4, dtype=torch.long))
        lp1 = prior.log_prob(x, torch.ones(4, dtype=torch.long))
    assert not torch.allclose(lp0, lp1)
    with pytest.raises(ValueError, match="class-conditional"):
        prior.log_prob(x)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_conditional_normalization(name, device):
    shape, K = (1, 2, 2), 3
    prior = tiny_prior(name, shape, K, num_classes=2, device=device)
    grids = every_grid(shape, K, device)
    with torch.no_grad():
        for label in (0, 1):
            total = prior.log_prob(grids, torch.full((len(grids),), label, device=device)).exp().sum().item()
            assert abs(total - 1.0) < 1e-5


CONTEXT_NAMES = [n for n in CASE_NAMES if prior_class(n).supports_context]


@pytest.mark.parametrize("name", CONTEXT_NAMES)
def test_spatial_context_normalization_and_effect(name, device):
    shape, K = (1, 2, 2), 3
    prior = tiny_prior(name, shape, K, symbols="codes", embed_dim=4, context_symbols=5,
                       context_shape=(1, 1), device=device)
    grids = every_grid(shape, K, device)
    ctx = [torch.full((len(grids), 1, 1), v, device=device) for v in (0, 4)]
    with torch.no_grad():
        lps = [prior.log_prob(grids, {"context": c}) for c in ctx]
    for lp in lps:
        assert abs(lp.exp().sum().item() - 1.0) < 1e-5
    assert not torch.allclose(lps[0], lps[1])


@pytest.mark.parametrize("case", [(n, C) for n in CONTEXT_NAMES for head, C in head_cases(n) if head == "categorical"],
                         ids=case_id)
def test_a_context_is_seen_in_full_and_keeps_x_causal(case, device):
    """With a spatial context, every symbol still sees only its past in x (gradients); the context
    is known in full: a code covering the last positions changes the first symbol's conditional."""
    name, C = case
    prior = tiny_prior(name, (C, 4, 4), 8, context_symbols=3, context_shape=(2, 2), device=device)
    g = generator("cpu", 1)
    x = torch.randint(0, 8, (8, C, 4, 4), generator=g).to(device)
    context = torch.randint(0, 2, (8, 2, 2), generator=g).to(device)
    assert_causal(prior, x, Condition(context=context))
    changed = context.clone()
    changed[:, 1, 1] = 2
    with torch.no_grad():
        first = [prior.log_prob_per_symbol(x, {"context": c})[:, 0, 0, 0] for c in (context, changed)]
    assert not torch.allclose(*first), "the context below and right of a symbol is not seen"


@pytest.mark.parametrize("name", CONTEXT_NAMES)
def test_save_load_round_trip_with_a_context(name, tmp_path):
    prior = tiny_prior(name, (1, 4, 4), 5, symbols="codes", embed_dim=4, context_symbols=3, context_shape=(2, 2))
    x, cond = torch.randint(0, 5, (3, 1, 4, 4)), {"context": torch.randint(0, 3, (3, 2, 2))}
    prior.save(tmp_path / "m")
    loaded = latentar.load(tmp_path / "m").eval()
    assert loaded.spec.context_shape == (2, 2) and loaded.spec.context_symbols == 3
    with torch.no_grad():
        assert torch.equal(prior.log_prob(x, cond), loaded.log_prob(x, cond))


# ---- distribution augmentation (latentar.augmentations) ----------------------------------------
AUGMENTED = dict(augmentations=("rot90", "transpose"))  # 8 ids


@pytest.mark.parametrize("name", NAMES)
def test_augmentation_normalization_for_every_id(name, device):
    """Under every augmentation id (with class labels too) the prior is a normalized distribution,
    a different one per id; no ids means id 0, the identity."""
    shape, K = (1, 2, 2), 3
    prior = tiny_prior(name, shape, K, num_classes=2, device=device, **AUGMENTED)
    grids = every_grid(shape, K, device)
    labels = torch.ones(len(grids), dtype=torch.long, device=device)
    assert prior.num_augmentations == 8
    with torch.no_grad():
        lps = [prior.log_prob(grids, {"labels": labels, "augment": torch.full_like(labels, a)}) for a in range(8)]
        assert torch.equal(prior.log_prob(grids, labels), lps[0])
    for lp in lps:
        assert abs(lp.exp().sum().item() - 1.0) < 1e-5
    assert not any(torch.allclose(lps[0], lp) for lp in lps[1:]), "an augmentation id changes nothing"


@pytest.mark.parametrize("name", sorted({case[0] for case in NETWORK_CASES}))
def test_causality_by_gradients_under_augmentation(name, device):
    prior = tiny_prior(name, (1, 4, 4), 8, device=device, **AUGMENTED)
    x = torch.randint(0, 8, (8, 1, 4, 4)).to(device)
    assert_causal(prior, x, Condition(augment=torch.arange(8, device=device)))


@pytest.mark.parametrize("name", NAMES)
def test_augmentations_save_load_and_refusals(name, tmp_path):
    prior = tiny_prior(name, (1, 4, 4), 4, symbols="codes", embed_dim=4, augmentations=("rot90", "flip"))
    x = torch.randint(0, 4, (8, 1, 4, 4))
    cond = {"augment": torch.arange(8)}
    prior.save(tmp_path / "m")
    loaded = latentar.load(tmp_path / "m").eval()
    assert loaded.spec.augmentations == ("rot90", "flip") and loaded.num_augmentations == 8
    with torch.no_grad():
        assert torch.equal(prior.log_prob(x, cond), loaded.log_prob(x, cond))
    with pytest.raises(ValueError, match=r"augmentation ids must lie in \[0, 8\)"):
        prior.log_prob(x, {"augment": torch.full((8,), 8)})
    plain = tiny_prior(name, (1, 4, 4), 4)
    assert plain.num_augmentations == 1
    with pytest.raises(ValueError, match="built without augmentations"):
        plain.log_prob(x, cond)
    with pytest.raises(ValueError, match="built without augmentations"):
        plain.sample(2, {"augment": torch.zeros(2, dtype=torch.long)})


def test_a_model_folder_from_before_augmentations_loads(tmp_path):
    prior = tiny_prior("pixelcnn", (1, 4, 4), 4)
    prior.save(tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    saved = json.loads(config_path.read_text())
    del saved["config"]["spec"]["augmentations"]
    config_path.write_text(json.dumps(saved))
    assert latentar.load(tmp_path / "m").spec.augmentations == ()


# ---- bad input -------------------------------------------------------------------------
def test_bad_inputs_name_the_problem(tmp_path):
    prior = tiny_prior("pixelcnn", (1, 4, 4), 4)
    with pytest.raises(ValueError, match=r"shape \(B, 1, 4, 4\)"):
        prior.log_prob(torch.zeros(2, 3, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"symbols in \[7, 7\], expected \[0, 4\)"):
        prior.log_prob(torch.full((2, 1, 4, 4), 7))
    with pytest.raises(TypeError, match="integer tensor"):
        prior.log_prob(torch.zeros(2, 1, 4, 4))
    with pytest.raises(LookupError, match="unknown prior 'pixelcnm'.*pixelcnn"):
        latentar.build_prior("pixelcnm", (1, 4, 4), 4)
    with pytest.raises(LookupError, match="unknown head 'softmax'.*categorical"):
        latentar.build_prior("pixelcnn", (1, 4, 4), 4, head="softmax")
    with pytest.raises(TypeError, match="unknown argument.*'hiden'"):
        latentar.build_prior("pixelcnn", (1, 4, 4), 4, hiden=3)
    with pytest.raises(latentar.NotAModelError, match="config.json is missing"):
        latentar.load(tmp_path)
    with pytest.raises(latentar.NotAModelError, match="not a folder"):
        latentar.load(tmp_path / "nothing")


def test_damaged_or_mismatched_weights_are_rejected(tmp_path):
    prior = tiny_prior("pixelcnn", (1, 4, 4), 4)
    prior.save(tmp_path / "a")
    (tmp_path / "a" / "model.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(latentar.NotAModelError, match="damaged"):
        latentar.load(tmp_path / "a")
    tiny_prior("pixelcnn", (1, 4, 4), 4).save(tmp_path / "b")
    tiny_prior("pixelcnn", (1, 4, 4), 5).save(tmp_path / "c")
    (tmp_path / "c" / "config.json").replace(tmp_path / "b" / "config.json")
    with pytest.raises(latentar.NotAModelError, match="does not match"):
        latentar.load(tmp_path / "b")
