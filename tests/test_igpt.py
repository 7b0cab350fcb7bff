"""Image GPT's variant of the Transformer prior: the RMS norm and the sigmoid GELU against their
formulas, the zero-initialised head, every combination of the three flags exact and sampled
alike by the fast and naive samplers, and the igpt_* presets' sizes."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from prior_cases import every_grid, tiny_prior
from test_fast_sampling import assert_same_draws

import latentar
from latentar.checks import FieldError
from latentar.nn.transformer import gelu2, make_norm
from latentar.priors.transformer import Transformer

FLAGS = [dict(norm=norm, activation=activation, zero_head=zero)
         for norm, activation, zero in itertools.product(("layernorm", "rms"), ("gelu", "gelu2"), (False, True))]


def test_rms_norm_matches_a_hand_computed_value():
    norm = make_norm("rms", 3)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
    x = torch.tensor([[1.0, 2.0, 2.0]])  # mean(x²) = 3: no mean is subtracted
    expected = torch.tensor([[1.0, 4.0, 6.0]]) / math.sqrt(3 + 1e-5)
    assert torch.allclose(norm(x), expected, atol=1e-6)
    assert [name for name, _ in norm.named_parameters()] == ["weight"], "an RMS norm has a gain and no bias"


def test_gelu2_is_x_times_sigmoid_of_1702_x():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.7, 2.0], dtype=torch.float64)
    expected = torch.tensor([v / (1 + math.exp(-1.702 * v)) for v in x.tolist()], dtype=torch.float64)
    assert torch.allclose(gelu2(x), expected, atol=1e-12)


@pytest.mark.parametrize("head, C, K", [("categorical", 1, 7), ("categorical", 3, 5)])
def test_a_zero_head_makes_every_symbol_equally_likely_at_init(head, C, K):
    torch.manual_seed(0)
    prior = latentar.build_prior("transformer", (C, 3, 4), K, head, preset="tiny", zero_head=True)
    assert prior.out.bias is None and bool((prior.out.weight == 0).all())
    x = torch.randint(0, K, (5, C, 3, 4))
    with torch.no_grad():
        per_symbol = prior.log_prob_per_symbol(x)  # (5, C, 3, 4)
    assert torch.allclose(per_symbol, torch.full_like(per_symbol, -math.log(K)), atol=1e-6)


def test_the_defaults_are_the_gpt2_block():
    torch.manual_seed(0)
    implicit = latentar.build_prior("transformer", (1, 3, 3), 4, preset="tiny")
    torch.manual_seed(0)
    explicit = latentar.build_prior("transformer", (1, 3, 3), 4, preset="tiny", norm="layernorm",
                                    activation="gelu", zero_head=False)
    a, b = implicit.state_dict(), explicit.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert isinstance(implicit.norm, torch.nn.LayerNorm) and implicit.out.bias is not None
    assert implicit.blocks[0].mlp.activation is torch.nn.functional.gelu


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "-".join(str(v) for v in f.values()))
@pytest.mark.parametrize("head, shape, K", [("categorical", (1, 2, 2), 3), ("logistic_mixture", (3, 1, 1), 4)])
def test_every_flag_combination_is_normalized(flags, head, shape, K):
    prior = tiny_prior("transformer", shape, K, head, **flags)
    with torch.no_grad():
        total = prior.log_prob(every_grid(shape, K)).exp().sum().item()
    assert abs(total - 1.0) < 1e-5


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "-".join(str(v) for v in f.values()))
def test_every_flag_combination_samples_fast_as_naive(flags):
    assert_same_draws(tiny_prior("transformer", (1, 3, 4), 6, num_classes=2, **flags), 3,
                      torch.tensor([0, 1, 1]))
    context = tiny_prior("transformer", (1, 4, 4), 5, symbols="codes", embed_dim=4, context_symbols=3,
                         context_shape=(2, 2), **flags)
    codes = torch.randint(0, 3, (2, 2, 2), generator=torch.Generator().manual_seed(0))
    assert_same_draws(context, 2, {"context": codes})


@pytest.mark.parametrize("preset, width, layers, heads, count", [("igpt_s", 512, 24, 8, 75_961_856),
                                                                  ("igpt_m", 1024, 36, 8, 454_032_384),
                                                                  ("igpt_l", 1536, 48, 16, 1_360_720_384)])
def test_igpt_presets_have_the_papers_sizes(preset, width, layers, heads, count):
    """The sizes of Chen et al. (2020), and the parameter counts the README gives for 32×32
    palette tokens of K = 512 (the paper: 76M, 455M, 1.4B)."""
    arch = Transformer.make_arch(preset)
    assert (arch.width, arch.num_layers, arch.heads) == (width, layers, heads)
    assert (arch.norm, arch.activation, arch.zero_head) == ("rms", "gelu2", True)
    with torch.device("meta"):
        prior = latentar.build_prior("transformer", (1, 32, 32), 512, symbols="codes", preset=preset)
    assert sum(p.numel() for p in prior.parameters()) == count
    assert isinstance(prior.blocks[0].mlp_norm, torch.nn.RMSNorm)


def test_bad_flags_name_the_field():
    with pytest.raises(FieldError, match=r"transformer.norm must be one of \['layernorm', 'rms'\], got 'batch'"):
        latentar.build_prior("transformer", (1, 2, 2), 3, preset="tiny", norm="batch")
    with pytest.raises(FieldError, match=r"transformer.activation must be one of \['gelu', 'gelu2'\]"):
        latentar.build_prior("transformer", (1, 2, 2), 3, preset="tiny", activation="relu")
