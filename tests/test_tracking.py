"""The DoRA tracker (vidssl.ops.tracking) against a plain, loop-by-loop formulation of SPEC 1.5-1.6."""

from __future__ import annotations

import math

import pytest
import torch

from vidssl.models import Encoder, create_vit
from vidssl.ops.tracking import (
    binarize,
    choose_heads,
    mask_frames,
    track,
    track_clips,
)

B, T, H, N, DH = 3, 4, 6, 16, 8  # clips, frames, heads, patches (4x4), head dim
D = H * DH


def plain_tracker(cls_att, q0, z0, keys, heads, iters, eps, threshold):
    """SPEC 1.5 steps 2-5 written out per clip and per object, float64, official exp-domain Sinkhorn."""
    k = len(heads)
    protos = torch.zeros(B, k, D, dtype=torch.float64)
    assign = torch.zeros(B, N, k, dtype=torch.float64)
    refined = torch.zeros(B, k, D, dtype=torch.float64)
    att = torch.zeros(B, T, k, N, dtype=torch.float64)
    for b in range(B):
        q_cat = torch.cat([q0[b, h] for h in range(H)], dim=1).double()  # (N, D) heads concatenated
        for i, head in enumerate(heads.tolist()):
            for n in range(N):
                protos[b, i] += cls_att[b, head, n].double() * q_cat[n]  # P = A^I Q~
        z = z0[b].double()
        z = z / z.norm(dim=1, keepdim=True)
        S = z @ protos[b].t()  # (N, k)
        Q = torch.exp(S / eps - (S / eps).max()).t()  # (k, N)
        Q = Q / Q.sum()
        for _ in range(iters):
            Q = Q / Q.sum(dim=1, keepdim=True) / k
            Q = Q / Q.sum(dim=0, keepdim=True) / N
        M = (Q * N).t()  # (N, k)
        assign[b] = M
        refined[b] = M.t() @ z  # P' = M*^T Z
        for t in range(T):
            k_cat = torch.cat([keys[b, t, h] for h in range(H)], dim=1).double()  # (N, D)
            for i in range(k):
                logits = torch.tensor([refined[b, i] @ k_cat[n] for n in range(N)]) / math.sqrt(D)
                att[b, t, i] = torch.softmax(logits, dim=0)
    masks = torch.zeros(B, T, k, N, dtype=torch.bool)
    for t in range(T):
        for i in range(k):
            m = att[:, t, i] / att[:, t, i].norm(dim=1, keepdim=True)  # (B, N)
            for b in range(B):
                ref = m.mean() if threshold == "batch_mean" else m[b].mean()
                masks[b, t, i] = m[b] > ref
                masks[b, t, i, m[b].argmax()] = True
    return protos, assign, refined, att, masks


def random_inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, H, N + 1, generator=g) * 2
    cls_att = logits.softmax(-1)[..., 1:]  # (B, h, N), not renormalised
    q0 = torch.randn(B, H, N, DH, generator=g)
    z0 = torch.randn(B, N, D, generator=g)
    keys = torch.randn(B, T, H, N, DH, generator=g) * 0.3
    return cls_att, q0, z0, keys


@pytest.mark.parametrize("k", [1, 3, H])
@pytest.mark.parametrize("threshold", ["batch_mean", "sample_mean"])
def test_tracker_matches_plain_formulation(k: int, threshold: str) -> None:
    cls_att, q0, z0, keys = random_inputs(k)
    heads = choose_heads(H, k, generator=torch.Generator().manual_seed(k))
    assert len(set(heads.tolist())) == k
    # the training values (30 iterations, eps 0.05); the float64 reference stays in range there
    tracks = track(cls_att, q0, z0, keys, heads, iters=30, eps=0.05, threshold=threshold)
    protos, assign, refined, att, masks = plain_tracker(cls_att, q0, z0, keys, heads, 30, 0.05, threshold)
    torch.testing.assert_close(tracks.prototypes.double(), protos, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(tracks.assignment.double(), assign, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tracks.refined.double(), refined, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(tracks.attention.double(), att, rtol=1e-4, atol=1e-5)
    assert tracks.masks.dtype == torch.bool
    assert torch.equal(tracks.masks, masks)


def test_batch_mean_differs_from_sample_mean() -> None:
    # a flat map next to a peaky one: after L2 normalisation the flat map lies entirely above
    # the batch-wide mean (official, D9) but only half of it above its own mean
    att = torch.softmax(torch.randn(2, 1, 1, 32, generator=torch.Generator().manual_seed(0)) * 3, dim=-1)
    att[1] = torch.full((1, 1, 32), 1 / 32) + torch.linspace(0, 1e-4, 32)
    per_batch, per_sample = binarize(att, "batch_mean"), binarize(att, "sample_mean")
    assert per_batch[1].sum() == 32
    assert per_sample[1].sum() == 16
    assert per_batch[0].sum() <= per_sample[0].sum()
    with pytest.raises(ValueError, match="sample_mean"):
        binarize(att, "median")  # type: ignore[arg-type]


def test_flat_map_keeps_its_strongest_patch() -> None:
    att = torch.full((2, 1, 2, 16), 1 / 16)  # nothing is above the mean
    att[0, 0, 1, 5] += 1e-6
    for threshold in ("batch_mean", "sample_mean"):
        masks = binarize(att, threshold)  # type: ignore[arg-type]
        assert (masks.sum(-1) == 1).all()
        assert masks[0, 0, 1, 5]


def test_masks_keep_a_patch_and_zero_exactly_the_rest() -> None:
    cls_att, q0, z0, keys = random_inputs(5)
    heads = torch.tensor([0, 2, 4])
    tracks = track(cls_att, q0, z0, keys, heads, threshold="batch_mean")
    masks = tracks.masks  # (B, T, k, N)
    assert masks.any(dim=-1).all(), "every object keeps at least one patch in every frame"
    p = 4
    frames = torch.randn(B, T, 3, 4 * p, 4 * p) + 5  # no pixel is 0 by chance
    out = mask_frames(frames, masks, patch_size=p)  # (k, B, T, 3, 16, 16)
    assert out.shape == (3, B, T, 3, 16, 16)
    for i in range(3):
        for b in range(B):
            for t in range(T):
                for n in range(N):
                    r, c = divmod(n, 4)
                    block = out[i, b, t, :, r * p : (r + 1) * p, c * p : (c + 1) * p]
                    src = frames[b, t, :, r * p : (r + 1) * p, c * p : (c + 1) * p]
                    if masks[b, t, i, n]:
                        assert torch.equal(block, src)
                    else:
                        assert (block == 0).all()


def test_choose_heads_rejects_too_many_objects() -> None:
    with pytest.raises(ValueError, match="cannot track 7 objects with 6 attention heads"):
        choose_heads(6, 7)
    with pytest.raises(ValueError, match="between 1 and 6"):
        choose_heads(6, 0)


def test_track_clips_on_a_vit_folds_frames_and_reads_the_right_tensors() -> None:
    torch.manual_seed(0)
    enc = Encoder(create_vit("vit_tiny", 8)).eval()  # 3 heads, 64 px -> 8x8 patches
    frames = torch.randn(2, 3, 3, 64, 64)
    heads = torch.tensor([2, 0])
    tracks, cls = track_clips(enc, frames, k=2, features="final_tokens", heads=heads)
    assert cls.shape == (2, 3, 192) and tracks.masks.shape == (2, 3, 2, 64)
    # the same clip tracked alone frame by frame (sample threshold: independent of the batch)
    for b in range(2):
        out = enc.encode_with_last_attention(frames[b])  # T frames of one clip
        ref = track(
            out.cls_attention[0:1], out.q[0:1, :, 1:], out.patches[0:1], out.k[None, :, :, 1:], heads,
            threshold="batch_mean",
        )
        torch.testing.assert_close(tracks.attention[b : b + 1], ref.attention, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(cls[b], out.cls, rtol=1e-4, atol=1e-5)
    # the paper's Z~ = attention output A V of the last block (heads concatenated), not the final tokens
    out = enc.encode_with_last_attention(frames[0])
    blk = enc.vit.blocks[-1]
    x = enc.vit.blocks[:-1](enc._embed(frames[0]))
    qkv = blk.attn.qkv(blk.norm1(x)).reshape(3, -1, 3, 3, 64).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    a = torch.softmax(q @ k.transpose(-2, -1) / 8.0, dim=-1)
    av = (a @ v).transpose(1, 2).flatten(2)  # (T, L, D)
    torch.testing.assert_close(out.attention_output, av[:, 1:], rtol=1e-4, atol=1e-4)
    tracks_av, _ = track_clips(enc, frames[:1], k=2, features="attention_output", heads=heads)
    z = av[0:1, 1:]
    assert not torch.allclose(tracks_av.refined, tracks.refined[:1])
    ref = track(out.cls_attention[0:1], out.q[0:1, :, 1:], z, out.k[None, :, :, 1:], heads)
    torch.testing.assert_close(tracks_av.refined, ref.refined, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="final_tokens"):
        track_clips(enc, frames, k=2, features="values")  # type: ignore[arg-type]
