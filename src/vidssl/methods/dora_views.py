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

Every random parameter is drawn first, with the calls and in the order of the previous per-frame
torchvision pipeline (so a seed gives the same views, to float rounding), then the colour ops run
on stacks of frames (`BatchedPhotometric`) instead of one torchvision pipeline per frame and view:
several times faster on a loader core.
"""

from __future__ import annotations

import torch

from vidssl.config import AugConfig
from vidssl.data.transforms import BatchedPhotometric, RandomResizedCrop, coin


class DoRAClipViews:
    """Picklable transform for data-loader workers; randomness from torch's global RNG.

    `global_colour` / `local_colour` map a uint8 stack (N, 3, S, S) to the same; any such callable
    may replace them (a `v2.Identity()` to look at the geometry alone).
    """

    def __init__(self, aug: AugConfig) -> None:
        self.num_locals = aug.local_crops_number
        self.precrop = RandomResizedCrop(aug.precrop_size, aug.precrop_scale)
        self.source_crop = self.precrop  # the crop taken from the decoded frame (resolution check)
        self.global_crop = RandomResizedCrop(aug.global_crop_size, aug.global_crops_scale)
        self.local_crop = RandomResizedCrop(aug.local_crop_size, aug.local_crops_scale)
        self.global_colour = BatchedPhotometric(aug.global_crop_size, blur_p=0.1)
        self.local_colour = BatchedPhotometric(aug.local_crop_size, blur_p=0.5)

    def __call__(self, clip: torch.Tensor) -> list[torch.Tensor]:
        if clip.dim() != 4 or clip.shape[-1] != 3 or clip.dtype != torch.uint8:
            raise ValueError(f"DoRA clip views need a uint8 clip (T, H, W, 3), got {clip.dtype} {tuple(clip.shape)}")
        # a channels-last view, no copy: torch's uint8 bicubic resize works in that layout
        frames = clip.permute(0, 3, 1, 2)  # (T, 3, H, W)
        pre = self.precrop(frames)  # (T, 3, P, P), one box for the clip
        glob = self.global_crop(pre)  # (T, 3, G, G), one box for the clip
        if coin(0.5):  # one flip for the clip
            glob = glob.flip(-1)
        views = [self.global_colour(glob)]  # colour drawn frame by frame
        if self.num_locals:
            views += self._locals(pre).split(clip.shape[0])  # V x (T, 3, L, L)
        return views

    def _locals(self, pre: torch.Tensor) -> torch.Tensor:
        """(T, 3, P, P) -> (V * T, 3, L, L), view-major: per frame its own crop and colour.

        The V * T crops go through the colour ops as one stack: more of them share an op order,
        so each op call covers more images.
        """
        colour = self.local_colour
        batched = isinstance(colour, BatchedPhotometric)
        crops, draws = [], []
        for _ in range(self.num_locals):
            for frame in pre:
                crops.append(self.local_crop(frame))  # (3, L, L), its own box
                if batched:  # drawn right after the frame's crop, as the per-frame pipeline does
                    draws.append(colour.sample())
        return colour.apply(crops, draws) if batched else colour(torch.stack(crops))
