"""DoRA's clip views (SPEC 1.4): one geometry for the whole clip, colour per frame, locals per frame.

clip uint8 (T, H, W, 3) ->
  [global (T, 3, G, G), local_1 (T, 3, L, L), ..., local_V (T, 3, L, L)], all uint8.

1. one RandomResizedCrop to `precrop_size` (scale `precrop_scale`) shared by all T frames;
2. global: one RandomResizedCrop to G (scale `global_crops_scale`) + one horizontal flip, shared,
   so an object stays at the same place of the crop grid as it moves through the clip;
3. global photometric (jitter p 0.8, grayscale p 0.2, blur p 0.1, no solarisation) drawn per frame;
4. each local crop: per frame, its own RandomResizedCrop to L (scale `local_crops_scale`,
   bicubic) of the pre-cropped frame, jitter / grayscale, blur p 0.5, no flip.
Normalisation happens on the device, in the method (`vidssl.data.transforms.normalize`).
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from vidssl.config import AugConfig
from vidssl.data.transforms import BICUBIC, photometric


class DoRAClipViews:
    """Picklable transform for data-loader workers; randomness from torch's global RNG."""

    def __init__(self, aug: AugConfig) -> None:
        g, lc = aug.global_crop_size, aug.local_crop_size
        self.num_locals = aug.local_crops_number
        self.precrop = v2.RandomResizedCrop(aug.precrop_size, scale=aug.precrop_scale, interpolation=BICUBIC, antialias=True)
        self.global_geometry = v2.Compose([
            v2.RandomResizedCrop(g, scale=aug.global_crops_scale, interpolation=BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(p=0.5),
        ])
        self.global_colour = photometric(g, blur_p=0.1)
        self.local_crop = v2.RandomResizedCrop(lc, scale=aug.local_crops_scale, interpolation=BICUBIC, antialias=True)
        self.local_colour = photometric(lc, blur_p=0.5)

    def __call__(self, clip: torch.Tensor) -> list[torch.Tensor]:
        if clip.dim() != 4 or clip.shape[-1] != 3 or clip.dtype != torch.uint8:
            raise ValueError(f"DoRA clip views need a uint8 clip (T, H, W, 3), got {clip.dtype} {tuple(clip.shape)}")
        # A Video tv_tensor makes v2 draw one set of parameters for all T frames.
        video = tv_tensors.Video(clip.permute(0, 3, 1, 2).contiguous())  # (T, 3, H, W)
        pre = self.precrop(video)  # (T, 3, P, P), shared box
        glob = self.global_geometry(pre)  # (T, 3, G, G), shared box and flip
        views = [torch.stack([self.global_colour(f) for f in glob.as_subclass(torch.Tensor)])]
        frames = pre.as_subclass(torch.Tensor)
        for _ in range(self.num_locals):
            views.append(torch.stack([self.local_colour(self.local_crop(f)) for f in frames]))
        return views
