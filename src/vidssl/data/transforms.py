"""Augmentation primitives on uint8 tensors (torchvision.transforms.v2, no PIL round trip).

Views leave the data loader as uint8 (smaller to move between processes and to the GPU) and
are normalised on the device by `normalize`.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from vidssl.config import AugConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BICUBIC = v2.InterpolationMode.BICUBIC


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float (..., 3, H, W) with ImageNet statistics, on x's device."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return (x.float().div_(255.0) - mean) / std


def blur_kernel_size(crop_size: int) -> int:
    """An odd kernel of about a tenth of the crop, so sigma in [0.1, 2] means the same at any size."""
    return max(3, (crop_size // 10) | 1)


def photometric(crop_size: int, blur_p: float, solarize_p: float = 0.0) -> v2.Compose:
    """DINO's colour pipeline (SPEC 1.4 step 3b): jitter p=0.8, grayscale p=0.2, blur, solarize."""
    ops: list[v2.Transform] = [
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ]
    if blur_p > 0:
        ops.append(v2.RandomApply([v2.GaussianBlur(blur_kernel_size(crop_size), sigma=(0.1, 2.0))], p=blur_p))
    if solarize_p > 0:
        ops.append(v2.RandomSolarize(threshold=128, p=solarize_p))
    return v2.Compose(ops)


def random_crop(size: int, scale: tuple[float, float], flip: bool = True) -> v2.Compose:
    ops: list[v2.Transform] = [v2.RandomResizedCrop(size, scale=scale, interpolation=BICUBIC, antialias=True)]
    if flip:
        ops.append(v2.RandomHorizontalFlip(p=0.5))
    return v2.Compose(ops)


class MultiCropFrames:
    """DINO multi-crop applied to every frame of a clip independently (DINO on frames, "DINO (WT)").

    clip uint8 (T, H, W, 3) -> [global_1, ..., global_G, local_1, ..., local_L], each (T, 3, S, S)
    uint8. Global 1 is always blurred, global 2 is rarely blurred and sometimes solarised,
    locals are blurred half the time: DINO's recipe.
    """

    def __init__(self, aug: AugConfig) -> None:
        g, lc = aug.global_crop_size, aug.local_crop_size
        global_colour = [photometric(g, blur_p=1.0), photometric(g, blur_p=0.1, solarize_p=0.2)]
        self.globals = [
            v2.Compose([random_crop(g, aug.global_crops_scale), global_colour[i % 2]])
            for i in range(aug.global_crops_number)
        ]
        self.locals = [
            v2.Compose([random_crop(lc, aug.local_crops_scale), photometric(lc, blur_p=0.5)])
            for _ in range(aug.local_crops_number)
        ]

    def __call__(self, clip: torch.Tensor) -> list[torch.Tensor]:
        frames = clip.permute(0, 3, 1, 2)  # (T, 3, H, W)
        return [torch.stack([t(f) for f in frames]) for t in self.globals + self.locals]
