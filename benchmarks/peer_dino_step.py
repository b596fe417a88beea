"""One DINO training step, ours against one built from lightly's public modules, same inputs, one process.

lightly (`pip install 'vidssl[peer]'`, lightly 1.6): the structure of lightly's DINO example --
`DINOProjectionHead` on a backbone, the teacher a deep copy with `deactivate_requires_grad`,
one backbone call per view, `DINOLoss(teacher_out, student_out, epoch=)`,
`cancel_last_layer_gradients`, AdamW, `update_momentum` on backbone and head.
Ours: `vidssl.methods.dino.DINO.training_step` (views of one size in one backbone call, the
teacher's pass also returning its last [CLS] attention for the diagnostics), then what the
trainer does: per-tensor gradient clipping (`optim.clip_grad`), AdamW, `ema_update`. Two
reduced variants of ours say where the difference goes: without the diagnostics, and without
the diagnostics and the clipping.

Both use the same timm ViT-S/16 (`vidssl.models.vit.create_vit`, drop path 0.1 in the student),
the same images (batch 8: 2 global crops of 224 + 6 local crops of 96 px, random pixels), head
out_dim 65536 (hidden 2048, bottleneck 256), fp32. Time: the fastest of `--steps` steps after
`--warmup` (the machine may be shared). Peak memory: on the CPU, the peak bytes of live CPU tensor
storages during one step (`dora_step.PeakMemory`, a TorchDispatchMode: parameters, gradients,
optimizer state, activations, temporaries; not RSS, which the allocator's caching blurs); on a
GPU, `torch.cuda.max_memory_allocated` over one step.

    python benchmarks/peer_dino_step.py                 # ViT-S/16, batch 8 (about 2 min on 2 busy cores)
    python benchmarks/peer_dino_step.py --arch vit_tiny --batch 2 --steps 1   # a quick look
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Callable

import torch

from dora_step import PeakMemory

from vidssl.config import load_config
from vidssl.data.transforms import normalize
from vidssl.engine.optim import clip_gradients_per_tensor, ema_update, param_groups
from vidssl.methods import StepInfo, build_method
from vidssl.models.vit import create_vit

INFO = StepInfo(step=100, epoch=1, steps_per_epoch=100, total_steps=1000)  # past the frozen last layer
OUT, HIDDEN, BOTTLENECK = 65536, 2048, 256


def make_views(batch: int, globals_: int, locals_: int, device) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    views = [torch.randint(0, 256, (batch, 1, 3, 224, 224), generator=g, dtype=torch.uint8) for _ in range(globals_)]
    views += [torch.randint(0, 256, (batch, 1, 3, 96, 96), generator=g, dtype=torch.uint8) for _ in range(locals_)]
    return [v.to(device) for v in views]


class LightlyDINO(torch.nn.Module):
    """lightly's DINO example, written from its public modules."""

    def __init__(self, arch: str) -> None:
        from lightly.models.modules import DINOProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        backbone = create_vit(arch, 16, 0.1)
        dim = backbone.embed_dim
        self.student_backbone = backbone
        self.student_head = DINOProjectionHead(dim, HIDDEN, BOTTLENECK, OUT, freeze_last_layer=1)
        self.teacher_backbone = copy.deepcopy(backbone)
        self.teacher_head = DINOProjectionHead(dim, HIDDEN, BOTTLENECK, OUT)
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student_head(self.student_backbone(x).flatten(start_dim=1))

    def forward_teacher(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher_head(self.teacher_backbone(x).flatten(start_dim=1))


def lightly_step(arch: str, views: list[torch.Tensor], globals_: int, device) -> tuple[Callable[[], None], list]:
    from lightly.loss import DINOLoss
    from lightly.models.utils import update_momentum

    model = LightlyDINO(arch).to(device)
    criterion = DINOLoss(output_dim=OUT, warmup_teacher_temp_epochs=0).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.04)
    images = [normalize(v.flatten(0, 1)) for v in views]  # what its loader would hand over

    def step() -> None:
        teacher_out = [model.forward_teacher(x) for x in images[:globals_]]
        student_out = [model.forward(x) for x in images]
        loss = criterion(teacher_out, student_out, epoch=INFO.epoch)
        loss.backward()
        model.student_head.cancel_last_layer_gradients(current_epoch=INFO.epoch)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        update_momentum(model.student_backbone, model.teacher_backbone, m=0.996)
        update_momentum(model.student_head, model.teacher_head, m=0.996)

    return step, [model, optimizer]


def ours_step(arch: str, views: list[torch.Tensor], device, diagnostics: bool, clip: bool) -> tuple[Callable[[], None], list]:
    cfg = load_config("default", [
        "method.name=dino", f"model.arch={arch}", "model.patch_size=16", f"model.out_dim={OUT}",
        f"model.hidden_dim={HIDDEN}", f"model.bottleneck_dim={BOTTLENECK}", "model.drop_path=0.1",
        "aug.global_crops_number=2", "aug.global_crop_size=224", "aug.local_crops_number=6", "aug.local_crop_size=96",
    ])
    method = build_method(cfg).to(device)
    optimizer = torch.optim.AdamW(param_groups(method.student), lr=1e-5, weight_decay=0.04)
    g = method.num_globals

    def forward() -> torch.Tensor:
        if diagnostics:
            return method(views, INFO)[0]
        with torch.no_grad():  # the step without the attention and the statistics of the diagnostics
            teacher_out = method.embed(method.teacher, views[:g])
        student_out = method.embed(method.student, views[:g]) + method.embed(method.student, views[g:])
        return method.loss.multi_view(student_out, teacher_out, INFO.epoch)

    def step() -> None:
        loss = forward()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            clip_gradients_per_tensor(method.student, cfg.optim.clip_grad)
        optimizer.step()
        ema_update(method.teacher, method.student, 0.996)

    return step, [method, optimizer]


def measure(step: Callable[[], None], roots: list, steps: int, warmup: int, device) -> tuple[float, float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        sync()
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        step()
        sync()
        peak = torch.cuda.max_memory_allocated()
    else:
        with PeakMemory(roots) as tracker:
            step()
        peak = tracker.peak
    return min(times), peak / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="vit_small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2, help="timed steps, fastest kept (default 2)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", choices=["lightly", "ours"], help="run one side only")
    args = ap.parse_args()
    device = torch.device(args.device)
    views = make_views(args.batch, 2, 6, device)
    memory = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "live CPU tensor storages (PeakMemory)"
    print(f"{args.arch}/16, batch {args.batch}: 2x224 + 6x96 crops, out_dim {OUT}, fp32, {device}, "
          f"{torch.get_num_threads()} threads; peak memory = {memory}")
    rows: dict[str, tuple[float, float]] = {}
    runs = []
    if args.only != "ours":
        runs.append(("lightly", lambda: lightly_step(args.arch, views, 2, device)))
    if args.only != "lightly":
        runs += [("ours (trainer step)", lambda: ours_step(args.arch, views, device, True, True)),
                 ("ours without diagnostics", lambda: ours_step(args.arch, views, device, False, True)),
                 ("ours without diagnostics and clipping", lambda: ours_step(args.arch, views, device, False, False))]
    for name, build in runs:
        torch.manual_seed(0)
        step, roots = build()
        rows[name] = measure(step, roots, args.steps, args.warmup, device)
        print(f"  {name:40s} {rows[name][0]:7.2f} s/step  peak {rows[name][1]:6.2f} GiB", flush=True)
        del step, roots
    if "lightly" in rows:
        t0, m0 = rows["lightly"]
        for name, (t, m) in rows.items():
            if name != "lightly":
                print(f"  {name}: time {t / t0:.2f}x lightly's, peak memory {m / m0:.2f}x")


if __name__ == "__main__":
    main()
