"""Clip augmentation speed: the per-frame torchvision pipeline vs our batched clip views, in one process.

- baseline (written here, the previous `DoRAClipViews` / `MultiCropFrames`): torchvision.transforms.v2
  ops frame by frame, one ColorJitter / Grayscale / GaussianBlur pipeline per frame and view;
- ours: `vidssl.methods.dora_views.DoRAClipViews` / `vidssl.methods.dino_views.MultiCropFrames`: every
  parameter drawn first (in torchvision's order), then each colour op on a stack of frames.

Both run on the same random uint8 clip with torch.set_num_threads(1) (one loader core), alternating
call by call with the same seed, so a shared machine slows both alike. Prints the median (and
fastest) seconds per clip of each, the ratio of the medians, and the largest difference between
the two outputs for the same seed (the same draws, so at most a few grey levels of float rounding).

    python benchmarks/clip_views.py                       # DoRA preset, 8 frames of 512x910, 10 clips each
    python benchmarks/clip_views.py --method dino --reps 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from vidssl.config import AugConfig, load_config
from vidssl.data.transforms import BICUBIC, blur_kernel_size
from vidssl.methods.dino_views import MultiCropFrames
from vidssl.methods.dora_views import DoRAClipViews

Views = Callable[[torch.Tensor], list[torch.Tensor]]


def per_frame_colour(crop_size: int, blur_p: float, solarize_p: float = 0.0) -> v2.Compose:
    """DINO's colour pipeline for one (3, S, S) frame, as the previous code built it."""
    ops: list[v2.Transform] = [v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), v2.RandomGrayscale(p=0.2)]
    if blur_p > 0:
        ops.append(v2.RandomApply([v2.GaussianBlur(blur_kernel_size(crop_size), sigma=(0.1, 2.0))], p=blur_p))
    if solarize_p > 0:
        ops.append(v2.RandomSolarize(threshold=128, p=solarize_p))
    return v2.Compose(ops)


def crop(size: int, scale: tuple[float, float]) -> v2.RandomResizedCrop:
    return v2.RandomResizedCrop(size, scale=scale, interpolation=BICUBIC, antialias=True)


class PerFrameDoRA:
    """The previous DoRA clip views: shared pre-crop, global crop + flip; colour and locals per frame."""

    def __init__(self, aug: AugConfig) -> None:
        g, lc = aug.global_crop_size, aug.local_crop_size
        self.num_locals = aug.local_crops_number
        self.precrop = crop(aug.precrop_size, aug.precrop_scale)
        self.global_geometry = v2.Compose([crop(g, aug.global_crops_scale), v2.RandomHorizontalFlip(p=0.5)])
        self.global_colour = per_frame_colour(g, blur_p=0.1)
        self.local_crop = crop(lc, aug.local_crops_scale)
        self.local_colour = per_frame_colour(lc, blur_p=0.5)

    def __call__(self, clip: torch.Tensor) -> list[torch.Tensor]:
        video = tv_tensors.Video(clip.permute(0, 3, 1, 2).contiguous())  # (T, 3, H, W): one draw for all frames
        pre = self.precrop(video)
        glob = self.global_geometry(pre)
        views = [torch.stack([self.global_colour(f) for f in glob.as_subclass(torch.Tensor)])]
        frames = pre.as_subclass(torch.Tensor)
        for _ in range(self.num_locals):
            views.append(torch.stack([self.local_colour(self.local_crop(f)) for f in frames]))
        return views


class PerFrameDINO:
    """The previous DINO-on-frames multi-crop: every view, every frame its own v2 pipeline."""

    def __init__(self, aug: AugConfig) -> None:
        g, lc = aug.global_crop_size, aug.local_crop_size
        colour = [per_frame_colour(g, blur_p=1.0), per_frame_colour(g, blur_p=0.1, solarize_p=0.2)]
        flip = v2.RandomHorizontalFlip(p=0.5)
        self.views = [
            v2.Compose([crop(g, aug.global_crops_scale), flip, colour[i % 2]]) for i in range(aug.global_crops_number)
        ]
        self.views += [
            v2.Compose([crop(lc, aug.local_crops_scale), flip, per_frame_colour(lc, blur_p=0.5)])
            for _ in range(aug.local_crops_number)
        ]

    def __call__(self, clip: torch.Tensor) -> list[torch.Tensor]:
        frames = clip.permute(0, 3, 1, 2)
        return [torch.stack([t(f) for f in frames]) for t in self.views]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=["dora", "dino"], default="dora")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=910)
    parser.add_argument("--reps", type=int, default=10, help="timed clips per pipeline")
    args = parser.parse_args()

    torch.set_num_threads(1)
    preset = "dora-vits16-wtours" if args.method == "dora" else "dino-vits16-wtours"
    aug = load_config(preset, []).aug
    ours: Views = DoRAClipViews(aug) if args.method == "dora" else MultiCropFrames(aug)
    baseline: Views = PerFrameDoRA(aug) if args.method == "dora" else PerFrameDINO(aug)
    clip = torch.randint(0, 256, (args.frames, args.height, args.width, 3), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))
    print(f"{preset}: clip {tuple(clip.shape)} uint8, {aug}")

    times: dict[str, list[float]] = {"per-frame torchvision": [], "batched (ours)": []}
    worst = 0
    for rep in range(-1, args.reps):  # rep -1 warms up
        outputs = []
        pipelines = [("per-frame torchvision", baseline), ("batched (ours)", ours)]
        for name, fn in pipelines if rep % 2 else pipelines[::-1]:
            torch.manual_seed(rep)
            start = time.perf_counter()
            outputs.append(fn(clip))
            if rep >= 0:
                times[name].append(time.perf_counter() - start)
        for a, b in zip(*outputs):
            worst = max(worst, (a.int() - b.int()).abs().max().item())

    for name, ts in times.items():
        print(f"{name:24s} {statistics.median(ts):.4f} s/clip median, {min(ts):.4f} fastest ({len(ts)} clips)")
    ratio = statistics.median(times["per-frame torchvision"]) / statistics.median(times["batched (ours)"])
    print(f"speed-up (median): {ratio:.2f}x; largest output difference for the same seed: {worst} grey levels")


if __name__ == "__main__":
    main()
