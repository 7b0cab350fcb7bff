"""The vector quantizer: EMA arithmetic, straight-through gradients, init, restarts, sync."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from einops import rearrange

from latentar.quantizers import CodeUsage, VectorQuantizer, kmeans
from latentar.vqvae import VQVAE


def grid(rows: list[list[float]]) -> torch.Tensor:
    """Vectors (N, D) -> z (1, D, 1, N), the layout a quantizer takes."""
    return rearrange(torch.tensor(rows, dtype=torch.float32), "n d -> 1 d 1 n")


def toy_quantizer(**kwargs) -> VectorQuantizer:
    q = VectorQuantizer(2, 2, **{"kmeans_iters": None, "restart_threshold": 0.0, **kwargs})
    q.codebook.data.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    if q.update == "ema":
        q.embed_sum.copy_(q.codebook)
    return q


def test_ema_update_matches_hand_computation():
    q = toy_quantizer(decay=0.5, eps=0.5, beta=0.25)  # cluster_size starts at [1, 1]
    z = grid([[1, 0], [9, 10], [20, 20], [10, 11]])
    _, indices, loss = q(z)
    assert indices.tolist() == [[[0, 1, 1, 1]]]
    # Commitment against the old codebook: squared errors 1 + 1 + 200 + 1 over 8 numbers.
    assert loss.item() == pytest.approx(0.25 * 203 / 8)
    # counts [1, 3]: cluster_size = 0.5·1 + 0.5·[1, 3] = [1, 2]; n = 3
    assert q.cluster_size.tolist() == [1.0, 2.0]
    # embed_sum = 0.5·old codes + 0.5·[[1, 0], [39, 41]]
    assert torch.allclose(q.embed_sum, torch.tensor([[0.5, 0.0], [24.5, 25.5]]))
    # Laplace smoothing: (N_i + eps) / (n + K·eps) · n = [1.5, 2.5] / 4 · 3 = [1.125, 1.875]
    expected = torch.tensor([[0.5 / 1.125, 0.0], [24.5 / 1.875, 25.5 / 1.875]])
    assert torch.allclose(q.codebook, expected)


def test_eval_mode_leaves_the_codebook_alone():
    q = toy_quantizer().eval()
    before = q.state_dict()
    q(grid([[1, 0], [9, 10]]))
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())


@pytest.mark.parametrize("update", ["ema", "loss"])
def test_straight_through_gradient_reaches_the_encoder(update):
    q = toy_quantizer(update=update, beta=0.25)
    z = grid([[1, 2], [9, 7], [3, 1]]).requires_grad_()
    codebook = q.codebook.detach().clone()  # (K, D), before the EMA moves it
    quantized, indices, loss = q(z)
    codes = codebook[indices.flatten()]  # (N, D)
    assert torch.equal(rearrange(quantized.detach(), "1 d 1 n -> n d"), codes)
    weight = torch.randn_like(z)
    ((quantized * weight).sum() + loss).backward()
    # d/dz: the decoder's gradient copied straight through, plus beta·2(z - e)/numel.
    commitment = 0.25 * 2 * (z.detach() - rearrange(codes, "n d -> 1 d 1 n")) / z.numel()
    assert torch.allclose(z.grad, weight + commitment)
    if update == "loss":  # the codebook loss moves the used codes toward their vectors
        assert q.codebook.grad is not None and q.codebook.grad.abs().sum() > 0


def test_embed_codes_round_trip():
    q = VectorQuantizer(16, 3).train()
    q(torch.randn(4, 3, 5, 5))  # k-means init from data
    q.eval()
    quantized, indices, _ = q(torch.randn(2, 3, 4, 6))
    assert indices.shape == (2, 4, 6) and indices.dtype == torch.long
    assert torch.equal(q.embed_codes(indices), quantized)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        q.embed_codes(torch.full((1, 2, 2), 16))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        q(torch.randn(1, 4, 2, 2))


def test_kmeans_init_places_codes_on_the_clusters():
    torch.manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [6.0, 6.0], [-6.0, 6.0]])
    points = centers.repeat_interleave(100, 0) + 0.1 * torch.randn(300, 2)  # (300, 2)
    q = VectorQuantizer(3, 2, kmeans_iters=5, restart_threshold=0.0)
    assert not bool(q.initialized)
    q(rearrange(points, "(b n) d -> b d 1 n", b=3))
    assert bool(q.initialized)
    distance = torch.cdist(q.codebook, centers)  # (3 codes, 3 centers)
    assert (distance.min(0).values < 0.1).all(), "every cluster has a code on it"
    # Statistics restart at one vector per code, then one EMA step counts 100 vectors each.
    assert torch.allclose(q.cluster_size, torch.full((3,), 0.99 * 1 + 0.01 * 100))
    found, counts = kmeans(points, 3, iters=5)
    assert torch.cdist(found, centers).min(0).values.max() < 0.1 and counts.tolist() == [100] * 3


def test_dead_code_is_revived_from_the_batch():
    torch.manual_seed(0)
    q = VectorQuantizer(3, 2, kmeans_iters=None, restart_threshold=0.5, decay=0.9)
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0]]))
    q.embed_sum.copy_(q.codebook)
    q.cluster_size.copy_(torch.tensor([1.0, 1.0, 0.5]))
    rows = [[0.1, 0.0], [1.0, 0.9], [3.0, 3.0], [3.1, 2.9]]
    q(grid(rows))  # code 2 gets nothing: usage 0.9·0.5 = 0.45 < 0.5
    assert any(torch.equal(q.codebook[2], torch.tensor(r)) for r in rows), q.codebook[2]
    assert q.cluster_size[2] == 0.5
    assert torch.allclose(q.embed_sum[2] / q.cluster_size[2], q.codebook[2])
    _, indices, _ = q(grid(rows))
    assert 2 in indices.flatten().tolist(), "the revived code is used"


def test_code_usage_over_a_pass():
    usage = CodeUsage(4)
    usage.update(torch.tensor([[0, 0], [1, 0]]))
    usage.update(torch.tensor([1, 1]))  # totals [3, 3, 0, 0], not a mean of batch values
    assert usage.perplexity() == pytest.approx(2.0)
    assert usage.fraction_used() == 0.5
    usage.update(torch.tensor([2, 3]))  # [3, 3, 1, 1] / 8
    p = torch.tensor([3, 3, 1, 1]) / 8
    assert usage.perplexity() == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    with pytest.raises(ValueError, match="update"):
        CodeUsage(4).perplexity()


# ---- two processes ---------------------------------------------------------------
def _train_on_rank(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # the same initial weights on both ranks ...
        model = VQVAE((1, 8, 8), preset="tiny", hierarchical=True, restart_threshold=2.0)
        data = torch.Generator().manual_seed(100 + rank)  # ... but different data
        for _ in range(4):
            images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8, generator=data)
            loss, _ = model.loss(images)
            gradients = torch.autograd.grad(loss, list(model.parameters()))
            with torch.no_grad():  # plain SGD (torch.optim's first use imports torch._dynamo: slow)
                for p, g in zip(model.parameters(), gradients):
                    p -= 0.05 * g
        usage = CodeUsage(8)
        usage.update(torch.full((rank + 1,), rank))  # rank 0 uses code 0 once, rank 1 code 1 twice
        usage.all_reduce()
        state = {k: v for k, v in model.state_dict().items() if "quantizer" in k}
        state["usage"] = usage.counts
        state["encoder_weight"] = model.encoder[0].weight.detach()
        torch.save(state, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_processes_hold_identical_codebooks(tmp_path, free_port):
    # spawn, not fork: a fork after torch's thread pool started can hang in the child
    mp.start_processes(_train_on_rank, args=(2, free_port, str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert not torch.equal(a.pop("encoder_weight"), b.pop("encoder_weight")), "ranks saw the same data"
    assert a["usage"].tolist() == [1, 2, 0, 0, 0, 0, 0, 0]
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs between processes"
    assert "quantizer.codebook" in a and "top_quantizer.codebook" in a
