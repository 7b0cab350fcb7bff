"""PixelSNAIL: strictly causal attention, full context, spatial conditioning, fast sampling."""

from __future__ import annotations

import math

import pytest
import torch
from prior_cases import tiny_prior
from test_fast_sampling import assert_same_draws
from test_pixelcnn import assert_stepper_matches_full_pass

import latentar
from latentar.nn.attention import CausalSelfAttention, attend_strictly_causal
from latentar.nn.caches import StepCache
from latentar.nn.passes import FullPass, StepPass
from latentar.priors import Condition


def attention(seed: int = 0) -> CausalSelfAttention:
    torch.manual_seed(seed)
    return CausalSelfAttention(query_channels=3, kv_channels=5, heads=2, key_dim=4, value_dim=3)


def test_attention_matches_a_loop_over_earlier_positions():
    """Each position's output, computed by hand from the keys and values of j < i only."""
    attn = attention()
    q_in, kv_in = torch.randn(2, 3, 3, 4), torch.randn(2, 5, 3, 4)
    out = attn(q_in, kv_in).flatten(2)  # (2, heads·dv, N)
    q = attn.query(q_in).flatten(2).view(2, 2, 4, 12)  # (B, heads, dk, N)
    k = attn.key(kv_in).flatten(2).view(2, 2, 4, 12)
    v = attn.value(kv_in).flatten(2).view(2, 2, 3, 12)
    assert torch.equal(out[:, :, 0], torch.zeros(2, 6)), "the first position attends to nothing"
    for i in range(1, 12):
        scores = torch.einsum("bnd,bndj->bnj", q[..., i], k[..., :i]) / math.sqrt(4)  # (B, heads, i)
        expected = torch.einsum("bnj,bndj->bnd", scores.softmax(-1), v[..., :i]).flatten(1)
        assert torch.allclose(out[:, :, i], expected, atol=1e-6)


def test_attention_under_cpu_bf16_autocast_runs_its_core_in_float32():
    """bf16 in, bf16 out, but the fused kernel works in float32: the same as float32
    attention of the same (bf16-rounded) inputs, rounded once at the end."""
    q, k = torch.randn(2, 2, 12, 4).bfloat16(), torch.randn(2, 2, 12, 4).bfloat16()
    v = torch.randn(2, 2, 12, 3).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attend_strictly_causal(q, k, v)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, attend_strictly_causal(q.float(), k.float(), v.float()).bfloat16())


def test_attention_is_strictly_causal_and_nan_free():
    attn = attention()
    H, W = 3, 4
    q_in = torch.randn(1, 3, H, W, requires_grad=True)
    kv_in = torch.randn(1, 5, H, W, requires_grad=True)
    out = attn(q_in, kv_in)
    for i in range(H * W):
        gq, gkv = torch.autograd.grad(out[0, :, i // W, i % W].sum(), (q_in, kv_in), retain_graph=True)
        assert torch.isfinite(gq).all() and torch.isfinite(gkv).all()
        seen = gkv[0].abs().sum(0).flatten()  # (N,)
        assert (seen[i:] == 0).all(), f"position {i} sees keys/values at or after itself"
        assert (seen[:i] > 0).all(), f"position {i} misses an earlier key/value"
        other = gq[0].abs().sum(0).flatten()
        assert (other[torch.arange(H * W) != i] == 0).all(), "a query leaks into other positions"


def test_step_passes_of_attention_match_the_whole_map():
    """``run.attend`` one position at a time (KV cache) == the whole-map attention; the own part
    of a position's keys/values is read when ``StepCache.take`` says the position is final."""
    attn = attention()
    H, W = 2, 3
    q_in, kv_in = torch.randn(2, 3, H, W), torch.randn(2, 5, H, W)
    full = attn(q_in, kv_in)  # (2, 6, H, W)
    assert torch.equal(FullPass().attend(attn, q_in, kv_in[:, :2], kv_in[:, 2:]), full)
    cache, own = StepCache(2, [(H, W)]), torch.full((2, 3, H, W), float("nan"))  # drawn step by step
    for r in range(H):
        for c in range(W):
            run = StepPass(cache, r, c)
            step = run.attend(attn, run.view(q_in), run.view(kv_in[:, :2]), own)  # (2, 6, 1, 1)
            assert torch.allclose(step[:, :, 0, 0], full[:, :, r, c], atol=1e-6)
            own[:, :, r, c] = kv_in[:, 2:, r, c]
            cache.take(r, c)


def test_attention_rejects_empty_sizes():
    with pytest.raises(ValueError, match="heads, key_dim and value_dim must be >= 1"):
        CausalSelfAttention(3, 5, heads=0, key_dim=4, value_dim=3)


def test_every_earlier_pixel_is_in_view():
    """Down-right-shifted convolutions alone only look up and left; attention adds the
    rest: the last pixel's log-prob has a gradient from every earlier pixel."""
    H, W = 5, 5
    prior = tiny_prior("pixelsnail", (1, H, W), 4)
    x = torch.randint(0, 4, (4, 1, H, W), generator=torch.Generator().manual_seed(0))
    z = prior.input(x).detach().requires_grad_()
    lp = prior.head.log_prob(prior.network(z, Condition()), x)  # (4, 1, H, W)
    for h, w in [(H - 1, W - 1), (2, 1)]:
        (grad,) = torch.autograd.grad(lp[:, 0, h, w].sum(), z, retain_graph=True)
        seen = grad.abs().sum((0, 1)).flatten()  # (H·W,)
        i = h * W + w
        assert (seen[:i] > 0).all() and (seen[i:] == 0).all()


def context_prior(**kwargs):
    return tiny_prior("pixelsnail", (1, 4, 4), 5, symbols="codes", embed_dim=4, context_symbols=3,
                      context_shape=(2, 2), **kwargs)


def test_stepper_params_match_the_full_pass():
    prior = context_prior(num_classes=3, num_blocks=2, res_units=2)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 5, (4, 1, 4, 4), generator=g)
    cond = {"labels": torch.tensor([0, 1, 2, 1]), "context": torch.randint(0, 3, (4, 2, 2), generator=g)}
    assert_stepper_matches_full_pass(prior, x, cond)
    rgb = tiny_prior("pixelsnail", (3, 3, 4), 16, "logistic_mixture", num_blocks=2)
    assert_stepper_matches_full_pass(rgb, torch.randint(0, 16, (3, 3, 3, 4), generator=g))


def test_fast_sampling_with_classes_and_context():
    prior = context_prior(num_classes=3, num_blocks=2, res_units=2)
    g = torch.Generator().manual_seed(1)
    cond = {"labels": torch.tensor([0, 1, 2, 1]), "context": torch.randint(0, 3, (4, 2, 2), generator=g)}
    assert_same_draws(prior, 4, cond)


@pytest.mark.parametrize("shape, K, head", [((3, 3, 3), 6, "categorical"),
                                            ((3, 3, 4), 16, "logistic_mixture")])
def test_fast_sampling_rgb(shape, K, head):
    prior = tiny_prior("pixelsnail", shape, K, head, num_blocks=2)
    assert_same_draws(prior, 3, None)


def test_bad_context_names_the_problem():
    prior = context_prior()
    x = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"needs a spatial context of shape \(B, 2, 2\)"):
        prior.log_prob(x)
    with pytest.raises(ValueError, match=r"context must have shape \(2, 2, 2\)"):
        prior.log_prob(x, {"context": torch.zeros(2, 3, 3, dtype=torch.long)})


def test_bad_architecture_names_the_problem():
    with pytest.raises(ValueError, match=r"pixelsnail.num_blocks must be an integer in \[1, 1024\], got 0"):
        latentar.build_prior("pixelsnail", (1, 4, 4), 4, num_blocks=0)
    with pytest.raises(ValueError, match="does not take a spatial context"):
        latentar.build_prior("row_lstm", (1, 4, 4), 4, symbols="codes", context_symbols=3,
                             context_shape=(2, 2))
