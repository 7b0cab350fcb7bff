"""The Transformer prior: its layers against hand-computed attention, the one-position shift,
the KV cache, conditioning, activation checkpointing, presets and the errors it raises."""

from __future__ import annotations

import math

import pytest
import torch
from prior_cases import every_grid, tiny_prior
from test_fast_sampling import assert_same_draws
from test_pixelcnn import assert_stepper_matches_full_pass

import latentar
from latentar.nn.caches import StepCache
from latentar.nn.passes import FullPass, StepPass
from latentar.nn.transformer import EncoderPass, SelfAttention
from latentar.priors.transformer import Transformer
from latentar.receptive_field import raster_past, receptive_field


def attention(seed: int = 0) -> SelfAttention:
    torch.manual_seed(seed)
    return SelfAttention(width=6, heads=2)


def by_hand(attn: SelfAttention, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """The attention of x (B, N, D) as a loop over positions i, softmax over j <= i (or all j)."""
    B, N, D = x.shape
    q, k, v = attn.qkv(x).view(B, N, 3, 2, 3).unbind(2)  # each (B, N, heads, d)
    rows = []
    for i in range(N):
        seen = slice(0, i + 1 if causal else N)
        scores = torch.einsum("bhd,bjhd->bhj", q[:, i], k[:, seen]) / math.sqrt(3)  # (B, heads, j)
        rows.append(torch.einsum("bhj,bjhd->bhd", scores.softmax(-1), v[:, seen]).flatten(1))  # (B, D)
    return attn.out(torch.stack(rows, 1))  # (B, N, D)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_matches_a_loop_over_positions(causal):
    attn = attention()
    x = torch.randn(2, 7, 6)
    assert torch.allclose(attn(x, causal=causal), by_hand(attn, x, causal), atol=1e-6)


def test_attention_is_inclusive_causal():
    """Position i moves with the inputs of positions j <= i and with nothing later."""
    attn = attention()
    x = torch.randn(1, 6, 6, requires_grad=True)
    out = FullPass().self_attend(attn, x)
    for i in range(6):
        (grad,) = torch.autograd.grad(out[0, i].sum(), x, retain_graph=True)
        seen = grad[0].abs().sum(1)  # (N,)
        assert (seen[:i + 1] > 0).all() and (seen[i + 1:] == 0).all(), f"position {i} sees {seen}"
    (grad,) = torch.autograd.grad(EncoderPass.self_attend(attn, x)[0, 0].sum(), x)
    assert (grad[0].abs().sum(1) > 0).all(), "the encoder pass sees every position"


def test_step_passes_of_attention_match_the_whole_sequence():
    """``StepPass.self_attend`` one position at a time over its KV cache == the full causal pass."""
    attn = attention()
    H, W = 2, 3
    x = torch.randn(2, H * W, 6)
    full = FullPass().self_attend(attn, x)  # (2, N, D)
    cache = StepCache(2, [(H, W)])
    for i in range(H * W):
        step = StepPass(cache, *divmod(i, W)).self_attend(attn, x[:, i:i + 1])  # (2, 1, D)
        assert torch.allclose(step[:, 0], full[:, i], atol=1e-6), f"position {i}"
    keys, values = cache.kv[attn]
    assert keys.shape == values.shape == (2, 2, H * W, 3)


def test_attention_rejects_a_width_that_heads_do_not_divide():
    with pytest.raises(ValueError, match="width 6 must be a multiple of the number of heads 4"):
        SelfAttention(width=6, heads=4)
    with pytest.raises(ValueError, match=r"transformer.width \(10\) must be a multiple of transformer.heads \(4\)"):
        latentar.build_prior("transformer", (1, 4, 4), 4, width=10, heads=4)


# ---- the prior ---------------------------------------------------------------------------
def test_the_first_position_sees_only_the_start_token():
    """Slot 0 holds the start token: the first position's distribution is the same for every grid."""
    prior = tiny_prior("transformer", (1, 3, 3), 5)
    x = torch.randint(0, 5, (16, 1, 3, 3), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = prior(x)[:, :, 0, 0]  # (16, P)
    assert torch.allclose(first, first[:1].expand_as(first), atol=1e-6)
    assert not torch.allclose(prior(x)[:, :, 1, 1], prior(x)[:1, :, 1, 1].expand(16, -1))


@pytest.mark.parametrize("position", [(0, 0), (0, 7), (3, 0), (4, 4), (7, 7)])
def test_the_field_at_tiny_is_every_earlier_position(position):
    shape = (1, 8, 8)
    prior = latentar.build_prior("transformer", shape, 4, preset="tiny")
    assert torch.equal(receptive_field(prior, position), raster_past(shape, position))


def test_class_labels_set_the_start_token_and_a_per_block_bias():
    prior = latentar.build_prior("transformer", (1, 2, 2), 3, num_classes=2, preset="tiny")
    assert prior.start_token(torch.tensor([0, 1]), 2).shape == (2, 1, 8)
    x = every_grid((1, 2, 2), 3)
    labels = [torch.full((len(x),), c) for c in (0, 1)]
    with torch.no_grad():
        lp = [prior.log_prob_per_symbol(x, c) for c in labels]  # each (N, 1, 2, 2)
        assert not torch.allclose(lp[0][:, :, 0, 0], lp[1][:, :, 0, 0]), "the class is the first position's input"
        prior.class_embedding.weight.zero_()  # the per-class biases alone still tell the classes apart
        prior.class_bias.weight.normal_()
        assert not torch.allclose(prior.log_prob(x, labels[0]), prior.log_prob(x, labels[1]))


def context_prior(**kwargs):
    return tiny_prior("transformer", (1, 4, 4), 5, symbols="codes", embed_dim=4, context_symbols=3,
                      context_shape=(2, 2), **kwargs)


@pytest.mark.parametrize("layers, seen", [(1, True), (0, False)])
def test_context_encoder_makes_the_whole_map_visible(layers, seen):
    """With encoder blocks the first position depends on the last top code; without them it
    sees only the top code above it."""
    prior = context_prior(context_layers=layers)
    x = torch.randint(0, 5, (6, 1, 4, 4))
    context = torch.zeros(6, 2, 2, dtype=torch.long)
    changed = context.clone()
    changed[:, 1, 1] = 2
    with torch.no_grad():
        before, after = (prior.log_prob_per_symbol(x, {"context": c})[:, :, 0, 0] for c in (context, changed))
    assert (not torch.allclose(before, after)) == seen


def test_stepper_params_match_the_full_pass():
    prior = context_prior(num_classes=3, num_layers=3)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 5, (4, 1, 4, 4), generator=g)
    cond = {"labels": torch.tensor([0, 1, 2, 1]), "context": torch.randint(0, 3, (4, 2, 2), generator=g)}
    assert_stepper_matches_full_pass(prior, x, cond)
    rgb = tiny_prior("transformer", (3, 3, 4), 16, "logistic_mixture")
    assert_stepper_matches_full_pass(rgb, torch.randint(0, 16, (3, 3, 3, 4), generator=g))


@pytest.mark.parametrize("shape, K, head", [((3, 3, 3), 6, "categorical"), ((3, 3, 4), 16, "logistic_mixture"),
                                            ((1, 4, 4), 300, "categorical")])
def test_fast_sampling_whole_pixels_and_many_codes(shape, K, head):
    kwargs = dict(symbols="codes", embed_dim=4) if K == 300 else {}
    assert_same_draws(tiny_prior("transformer", shape, K, head, **kwargs), 3, None)


def test_fast_sampling_with_classes_context_and_guidance():
    prior = context_prior(num_classes=3, class_dropout=0.2)
    g = torch.Generator().manual_seed(1)
    cond = {"labels": torch.tensor([0, 1, 2, 1]), "context": torch.randint(0, 3, (4, 2, 2), generator=g)}
    assert_same_draws(prior, 4, cond, cfg_scale=2.5, top_k=3)


def test_activation_checkpointing_gives_the_same_gradients():
    """In train mode with dropout: the recomputed blocks draw the same dropout masks."""
    prior = tiny_prior("transformer", (1, 4, 4), 6, dropout=0.3, num_classes=2).train()
    x, labels = torch.randint(0, 6, (5, 1, 4, 4)), torch.tensor([0, 1, 1, 0, 1])
    grads, calls = [], []
    prior.blocks[0].register_forward_pre_hook(lambda module, args: calls.append(1))
    for on in (False, True):
        prior.set_activation_checkpointing(on)
        prior.zero_grad()
        calls.clear()
        torch.manual_seed(3)
        prior.loss(x, labels).backward()
        assert len(calls) == (2 if on else 1), "a checkpointed block runs again in backward"
        grads.append([p.grad.clone() for p in prior.parameters()])
    for plain, checkpointed in zip(*grads):
        assert torch.allclose(plain, checkpointed, atol=1e-7)


@pytest.mark.parametrize("kwargs", [{}, dict(num_classes=3), dict(symbols="codes", embed_dim=4, context_symbols=3,
                                                                  context_shape=(2, 2))])
def test_every_parameter_gets_a_gradient(kwargs):
    """Data-parallel training (DDP) without find_unused_parameters needs every parameter used."""
    prior = tiny_prior("transformer", (1, 4, 4), 5, **kwargs)
    x = torch.randint(0, 5, (4, 1, 4, 4))
    cond = {"labels": torch.tensor([0, 1, 2, 0])} if "num_classes" in kwargs else None
    cond = {"context": torch.randint(0, 3, (4, 2, 2))} if "context_shape" in kwargs else cond
    prior.loss(x, cond).backward()
    unused = [name for name, p in prior.named_parameters() if p.grad is None]
    assert not unused, f"parameters without a gradient: {unused}"


def test_bf16_autocast_trains():
    prior = tiny_prior("transformer", (1, 4, 4), 6)
    x = torch.randint(0, 6, (8, 1, 4, 4))
    full = prior.loss(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = prior.loss(x)
    half.backward()
    assert abs(half.item() - full.item()) < 0.05 * full.item()
    assert all(torch.isfinite(p.grad).all() for p in prior.parameters() if p.grad is not None)


def test_presets_build_and_paper_is_vqgan_sized():
    for preset in ("tiny", "small", "default"):
        latentar.build_prior("transformer", (1, 8, 8), 512, symbols="codes", preset=preset)
    spec = latentar.PriorSpec(shape=(1, 16, 16), num_symbols=16384, symbols="codes", embed_dim=1536,
                              num_classes=1000)
    with torch.device("meta"):
        paper = Transformer(spec, Transformer.make_arch("paper"))
    assert 1.3e9 < sum(p.numel() for p in paper.parameters()) < 1.5e9


# ---- bad input ---------------------------------------------------------------------------
def test_bad_input_names_the_problem():
    prior = tiny_prior("transformer", (1, 4, 4), 6, symbols="codes", embed_dim=4)
    with pytest.raises(ValueError, match=r"shape \(B, 1, 4, 4\)"):  # longer than the positions it was built for
        prior.log_prob(torch.zeros(2, 1, 5, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"symbols in \[0, 9\], expected \[0, 6\)"):  # codes of a larger codebook
        prior.log_prob(torch.arange(32).view(2, 1, 4, 4) % 10)
    with pytest.raises(ValueError, match=r"cfg_scale != 1 needs a class-conditional prior trained with class_dro"):
        prior.sample(2, cfg_scale=2.0)
    conditional = tiny_prior("transformer", (1, 4, 4), 6, num_classes=3)
    with pytest.raises(ValueError, match=r"class_dropout > 0 .*class_dropout=0.0"):
        conditional.sample(2, torch.tensor([0, 1]), cfg_scale=2.0)


def test_bad_context_names_the_problem():
    prior = context_prior()
    x = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"needs a spatial context of shape \(B, 2, 2\)"):
        prior.log_prob(x)
    with pytest.raises(ValueError, match=r"context must have shape \(2, 2, 2\), got \(2, 3, 3\)"):
        prior.log_prob(x, {"context": torch.zeros(2, 3, 3, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"context symbols must lie in \[0, 3\)"):
        prior.log_prob(x, {"context": torch.full((2, 2, 2), 3)})
