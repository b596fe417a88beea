"""A whole DoRA step's loss against a plain formulation of SPEC 1.5-1.7 written out here: frames
one at a time, objects one at a time, each image through the networks alone. It would catch a
swapped (k, B, T) layout, teacher and student frames out of line, a wrong mask upsampling or a
wrong aggregation, which the per-piece tests cannot see. The tracker itself is checked against
its own plain formulation in test_tracking.py; here it runs per clip (sample-mean threshold, so
a clip's masks do not depend on the others)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vidssl.config import load_config
from vidssl.data.transforms import normalize
from vidssl.methods import StepInfo, build_method
from vidssl.ops.tracking import choose_heads, track_clips

TINY = [
    "method.name=dora", "model.arch=vit_tiny", "model.patch_size=8", "model.out_dim=64", "model.hidden_dim=32",
    "model.bottleneck_dim=16", "model.drop_path=0.0", "aug.global_crops_number=1", "aug.precrop_size=48",
    "aug.global_crop_size=32", "aug.local_crop_size=16", "aug.local_crops_number=3",
    "method.mask_threshold=sample_mean",
]


def plain_loss(method, views: list[torch.Tensor], heads: torch.Tensor, quirks: bool) -> torch.Tensor:
    m, cfg = method, method.cfg.method
    frames = normalize(views[0])  # (B, T, 3, S, S)
    locals_ = [normalize(v) for v in views[1:]]
    B, T, _, S, _ = frames.shape
    k, p, V = len(heads), method.teacher["backbone"].patch_size, len(locals_)
    center = m.loss.center.clone()

    def embed(net, image):  # one image, alone
        return net["head"](net["backbone"](image[None]))[0].float()

    def ce(q, s):
        return -(q * F.log_softmax(s / cfg.student_temp, dim=-1)).sum()

    ce_mask = torch.zeros(k, B, T)
    ce_local = torch.zeros(V, B, T)
    with torch.no_grad():
        for b in range(B):
            tracks, _ = track_clips(m.teacher["backbone"], frames[b:b + 1], k, cfg.sinkhorn_iters, cfg.sinkhorn_eps,
                                    "sample_mean", cfg.track_features, heads=heads)
            for t in range(T):
                q = F.softmax((embed(m.teacher, frames[b, t]) - center) / cfg.teacher_temp, dim=-1)
                for j in range(k):
                    patch_mask = tracks.masks[0, t, j].view(S // p, S // p).float()
                    pixel_mask = patch_mask.repeat_interleave(p, 0).repeat_interleave(p, 1)
                    ce_mask[j, b, t] = ce(q, embed(m.student, frames[b, t] * pixel_mask))
                for v in range(V):
                    ce_local[v, b, t] = ce(q, embed(m.student, locals_[v][b, t]))
    mask_t = ce_mask.mean(dim=1)  # (k, T): mean over clips
    local_t = ce_local.mean(dim=1)  # (V, T)
    used = local_t[1:] if quirks else local_t  # D11: the official code never uses local crop 0
    f = 0.5 * (mask_t + used.mean(dim=0))  # (k, T)
    if not quirks:
        return f.mean()
    carried, total = torch.zeros(()), torch.zeros(())
    for j in range(k):  # D12: the per-frame sum is carried from one object to the next
        carried = (carried + f[j].sum()) / T
        total = total + carried
    return total / k


@pytest.mark.parametrize("quirks", [False, True], ids=["paper", "official-quirks"])
@pytest.mark.parametrize("k", [2, 3])
def test_a_dora_step_equals_the_plain_formulation(k: int, quirks: bool) -> None:
    cfg = load_config(None, TINY + [f"method.num_objects={k}", f"method.official_loss_quirks={str(quirks).lower()}"])
    torch.manual_seed(0)
    method = build_method(cfg)
    with torch.no_grad():  # a centre away from zero, so its sign and place in the formula matter
        method.loss.center.normal_(0, 0.5)
    clips = torch.randint(0, 256, (2, 3, 40, 56, 3), dtype=torch.uint8)  # B = 2 clips of T = 3 frames
    torch.manual_seed(1)
    per_clip = [method.make_transform()(c) for c in clips]
    views = [torch.stack([v[i] for v in per_clip]) for i in range(len(per_clip[0]))]
    torch.manual_seed(7)
    heads = choose_heads(method.teacher["backbone"].num_heads, k)  # the draw the step makes first
    expected = plain_loss(method, views, heads, quirks)
    torch.manual_seed(7)
    loss, _ = method(views, StepInfo(0, 0, 1, 1))
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-5)
