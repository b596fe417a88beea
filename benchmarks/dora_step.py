"""One DoRA training step, ours vs a reference formulation of the official approach, in one process.

Both do forward, backward, AdamW step and EMA update on the same networks and the same views:
- ours: `vidssl.methods.dora.DoRA.training_step`: frames folded into the batch, fused attention in
  every block but the [CLS] row of the last, the tracker vectorised over frames and objects,
  the k masked copies in one student call;
- reference (written here after SPEC 1.5, the official code's structure): the backbone called
  frame by frame with explicit attention in every block (all attention maps kept for backward),
  the tracker's masks built object by object and frame by frame, the student called per object
  and per frame.
Also our DoRA step against our DINO-on-frames step with the same student views per frame
(k global crops + the same local crops).

Prints seconds per step and peak memory (torch's MemTracker: parameters, gradients, optimizer
state, activations and temporaries of CPU tensors) of each and the ratios. fp32 on the CPU.

    python benchmarks/dora_step.py            # vit_small/16, 224 px, T=8, k=3, 6 locals of 112, batch 1
    python benchmarks/dora_step.py --quick    # the same at T=4, two timed steps
    python benchmarks/dora_step.py --quick --threads 1   # steadier on a shared machine
"""

from __future__ import annotations

import argparse
import math
import random
import time
import weakref
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from vidssl.config import load_config
from vidssl.data.transforms import normalize
from vidssl.engine.optim import ema_update, param_groups
from vidssl.methods import StepInfo, build_method
from vidssl.methods.dora import DoRA, multi_object_loss

INFO = StepInfo(step=100, epoch=1, steps_per_epoch=100, total_steps=1000)  # past the frozen last layer


# ----------------------------------------------------------------- reference (official structure)


def explicit_forward(vit: torch.nn.Module, x: torch.Tensor):
    """timm ViT with attention formed explicitly in every block, as the official ViT does.
    Returns ([CLS], patch tokens, last attention (B,h,L,L), last q, last k)."""
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
    for blk in vit.blocks:
        a = blk.attn
        h = blk.norm1(x)
        B, L, C = h.shape
        q, k, v = a.qkv(h).reshape(B, L, 3, a.num_heads, C // a.num_heads).permute(2, 0, 3, 1, 4)
        attn = ((q * a.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, h, L, L), kept for backward
        out = (attn @ v).transpose(1, 2).reshape(B, L, C)
        x = x + blk.drop_path1(blk.ls1(a.proj(out)))
        x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    x = vit.norm(x)
    return x[:, 0], x[:, 1:], attn.detach(), q.detach(), k.detach()


def plain_sinkhorn(scores: torch.Tensor, iters: int, eps: float) -> torch.Tensor:
    """The official exp-domain Sinkhorn on (B, N, k)."""
    q = scores / eps
    q = q - q.flatten(1).max(dim=1).values[:, None, None]
    Q = torch.exp(q).transpose(1, 2)  # (B, k, N)
    Q = Q / Q.sum(dim=(1, 2), keepdim=True)
    _, K, N = Q.shape
    for _ in range(iters):
        Q = Q / Q.sum(dim=2, keepdim=True) / K
        Q = Q / Q.sum(dim=1, keepdim=True) / N
    return (Q * N).transpose(1, 2)


def reference_masks(attn0, q0, patches0, keys, frames, k, patch, iters, eps):
    """Official MOT structure: prototypes from frame 0, Sinkhorn, then object by object and frame
    by frame cross-attention, threshold at the batch mean, upsample and mask. -> list (k) of (B,T,3,S,S)."""
    B, h, L, dh = q0.shape
    n = L - 1
    side = int(math.isqrt(n))
    q_cat = q0[:, :, 1:].permute(0, 2, 1, 3).reshape(B, n, h * dh)
    heads = random.sample(range(h), k)
    A = attn0[:, heads, 0, 1:]  # (B, k, N)
    P = torch.einsum("bkn,bnd->bkd", A, q_cat)
    Z = F.normalize(patches0, dim=-1)
    M = plain_sinkhorn(Z @ P.transpose(1, 2), iters, eps)
    P2 = M.transpose(1, 2) @ Z  # (B, k, D)
    out = []
    for i in range(k):
        per_frame = []
        for t in range(frames.shape[1]):
            K_t = keys[t][:, :, 1:].permute(0, 2, 1, 3).reshape(B, n, h * dh)
            att = torch.softmax(torch.einsum("bd,bnd->bn", P2[:, i], K_t) / math.sqrt(h * dh), dim=-1)
            m = att / att.norm(dim=-1, keepdim=True)
            m = (m > m.mean()).float().reshape(B, 1, side, side)
            m = F.interpolate(m, scale_factor=patch, mode="nearest")
            per_frame.append(frames[:, t] * m)
        out.append(torch.stack(per_frame, dim=1))
    return out


def reference_step(method: DoRA, views: list[torch.Tensor]) -> torch.Tensor:
    cfg = method.cfg
    k, p = cfg.method.num_objects, cfg.model.patch_size
    frames = normalize(views[0])  # (B, T, 3, S, S)
    locals_ = [normalize(v) for v in views[1:]]
    B, T = frames.shape[:2]
    t_net, s_net = method.teacher, method.student
    with torch.no_grad():
        outs = [explicit_forward(t_net["backbone"].vit, frames[:, t]) for t in range(T)]
        teacher_out = torch.stack([t_net["head"](o[0]) for o in outs], dim=1)  # (B, T, D)
        probs = method.loss.teacher_probs(teacher_out, INFO.epoch)
        masked = reference_masks(outs[0][2], outs[0][3], outs[0][1], [o[4] for o in outs], frames, k, p,
                                 cfg.method.sinkhorn_iters, cfg.method.sinkhorn_eps)
    student_masked = torch.stack([
        torch.stack([s_net["head"](explicit_forward(s_net["backbone"].vit, masked[i][:, t])[0]) for t in range(T)], dim=1)
        for i in range(k)
    ])  # (k, B, T, D)
    student_local = None
    if locals_:
        per_frame = [s_net["head"](explicit_forward(s_net["backbone"].vit, torch.cat([v[:, t] for v in locals_]))[0])
                     for t in range(T)]  # each (V*B, D), crop-major as the official MultiCropWrapper
        student_local = torch.stack(per_frame, dim=1).view(len(locals_), B, T, -1)
    loss, _, _ = multi_object_loss(method.loss, probs, student_masked, student_local, cfg.method.official_loss_quirks)
    method.loss.update_center(teacher_out)
    return loss


# ----------------------------------------------------------------- timing and memory


class PeakMemory(TorchDispatchMode):
    """Peak bytes of live CPU tensor storages during a block: those alive at the start (parameters,
    gradients, optimizer state, buffers of `roots`) plus every storage an op creates inside it,
    each counted until it is freed (a finalizer on the storage)."""

    def __init__(self, roots: list) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0
        for root in roots:
            tensors = list(root.state_dict().values()) if isinstance(root, torch.nn.Module) else []
            if isinstance(root, torch.nn.Module):
                tensors += [p.grad for p in root.parameters() if p.grad is not None]
            else:  # an optimizer
                tensors += [v for state in root.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
            for t in tensors:
                self._add(t)
        self.start = self.current  # the state that exists between steps

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def _add(self, t: torch.Tensor) -> None:
        if t.device.type != "cpu" or t.is_sparse:
            return
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self.live:
            return
        self.live[key] = storage.nbytes()
        self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._add(t)
        return out


def full_step(method, optimizer, forward: Callable[[], torch.Tensor]) -> None:
    loss = forward()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    ema_update(method.teacher, method.student, 0.996)


def measure(name: str, method, views, forward_fn, steps: int, warmup: int) -> tuple[float, float]:
    optimizer = torch.optim.AdamW(param_groups(method.student), lr=1e-5)
    forward = lambda: forward_fn(method, views)  # noqa: E731
    for _ in range(warmup):
        full_step(method, optimizer, forward)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        full_step(method, optimizer, forward)
        times.append(time.perf_counter() - start)
    seconds = min(times)  # the least disturbed step: other processes share this machine
    with PeakMemory([method, optimizer]) as tracker:
        full_step(method, optimizer, forward)
    total, state = tracker.peak / 2**20, tracker.start / 2**20
    print(f"  {name:<34} {seconds:8.2f} s/step   peak {total:8.0f} MiB "
          f"(of which {state:.0f} MiB weights, gradients, optimizer state; {total - state:.0f} MiB step memory)", flush=True)
    return seconds, total, total - state


def ours(method, views):
    return method.training_step(views, INFO)[0]


def build(overrides: list[str], seed: int = 0):
    cfg = load_config(None, overrides)
    torch.manual_seed(seed)
    method = build_method(cfg).train()
    transform = method.make_transform()
    clips = torch.randint(0, 256, (cfg.data.batch_size, cfg.data.frames_per_clip, 360, 640, 3), dtype=torch.uint8)
    per_clip = [transform(c) for c in clips]
    views = [torch.stack([v[i] for v in per_clip]) for i in range(len(per_clip[0]))]
    return method, views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T=4 and two timed steps after one warm-up")
    parser.add_argument("--arch", default="vit_small", help="backbone (default: vit_small)")
    parser.add_argument("--patch", type=int, default=16, help="patch size (default: 16)")
    parser.add_argument("--size", type=int, default=224, help="global crop size (default: 224)")
    parser.add_argument("--frames", type=int, default=8, help="T (default: 8; 4 with --quick)")
    parser.add_argument("--batch", type=int, default=1, help="clips per step (default: 1)")
    parser.add_argument("--objects", type=int, default=3, help="k (default: 3)")
    parser.add_argument("--locals", type=int, default=6, help="local crops per frame (default: 6)")
    parser.add_argument("--out-dim", type=int, default=65536, help="head output dim (default: 65536)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps, the fastest is reported (default: 3; 2 with --quick)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: 1)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (default: torch's choice; 1 is steadier on a busy machine)")
    parser.add_argument("--skip-dino", action="store_true", help="skip the DoRA vs DINO comparison")
    parser.add_argument("--checkpointing", action="store_true",
                        help="also time ours with activation checkpointing of the student (model.grad_checkpointing)")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.steps = 4, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    common = [
        f"model.arch={args.arch}", f"model.patch_size={args.patch}", f"model.out_dim={args.out_dim}",
        "model.norm_last_layer=false", f"data.batch_size={args.batch}", f"data.frames_per_clip={args.frames}",
        "aug.precrop_size=300", f"aug.global_crop_size={args.size}", f"aug.local_crops_number={args.locals}",
        f"aug.local_crop_size={args.size // 2}",
    ]
    dora = common + ["method.name=dora", "aug.global_crops_number=1", f"method.num_objects={args.objects}"]
    print(f"DoRA step: {args.arch}/{args.patch}, {args.size} px, B={args.batch}, T={args.frames}, k={args.objects}, "
          f"{args.locals} locals of {args.size // 2} px, out_dim {args.out_dim}; fp32, {torch.get_num_threads()} threads; "
          f"{args.warmup} warm-up + fastest of {args.steps} timed step(s)", flush=True)
    method, views = build(dora)
    t_ours, m_ours, a_ours = measure("ours (folded, fused, vectorised)", method, views, ours, args.steps, args.warmup)
    method, views = build(dora)
    t_ref, m_ref, a_ref = measure("reference (official structure)", method, views, reference_step, args.steps, args.warmup)
    print(f"  ours / reference: time {t_ours / t_ref:.2f}x (aim <= 0.6), peak memory {m_ours / m_ref:.2f}x "
          f"(aim <= 0.4), step memory {a_ours / a_ref:.2f}x")
    if args.checkpointing:
        method, views = build(dora + ["model.grad_checkpointing=true"])
        t_ck, m_ck, a_ck = measure("ours + activation checkpointing", method, views, ours, args.steps, args.warmup)
        print(f"  ours with checkpointing / reference: time {t_ck / t_ref:.2f}x, peak memory {m_ck / m_ref:.2f}x, "
              f"step memory {a_ck / a_ref:.2f}x")
    if not args.skip_dino:
        dino = common + ["method.name=dino", f"aug.global_crops_number={args.objects}"]
        method, views = build(dino)
        t_dino, _, _ = measure(f"DINO on frames ({args.objects} global + {args.locals} local)", method, views, ours,
                            args.steps, args.warmup)
        print(f"  DoRA / DINO-on-frames with the same student views: time {t_ours / t_dino:.2f}x (aim <= 1.15)")


if __name__ == "__main__":
    main()
