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

Under `aug.device=accelerator` step 1 (the shared pre-crop) stays in the loader: it is one cheap
resize per frame, it gives every clip the same size (P x P) whatever the source, so a batch
collates, and it ships P^2 instead of H x W pixels to the device. The rest runs in the step:
per clip the global crop (one resize of its T frames), per frame each local crop (a loop, one
resize each), then the colour of the whole batch's globals and of all its locals as two stacks.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from vidssl.config import AugConfig
from vidssl.data.transforms import BatchedPhotometric, ClipViews, FrameColour, RandomResizedCrop, check_clip, coin, resized_crop

Box = tuple[int, int, int, int]


class DoRADraw(NamedTuple):
    """One clip's draws after the pre-crop."""

    global_box: Box
    flip: bool
    global_colour: list[FrameColour]  # per frame; [] when the colour is not a BatchedPhotometric
    local_boxes: list[Box]  # view-major: V x T
    local_colour: list[FrameColour]  # as local_boxes, or []


class DoRAClipViews(ClipViews):
    """Picklable transform for data-loader workers; randomness from torch's global RNG.

    `global_colour` / `local_colour` map a uint8 stack (N, 3, S, S) to the same; any deterministic
    such callable may replace them (a `v2.Identity()` to look at the geometry alone).
    """

    def __init__(self, aug: AugConfig) -> None:
        self.num_locals = aug.local_crops_number
        self.precrop = RandomResizedCrop(aug.precrop_size, aug.precrop_scale)
        self.source_crop = self.precrop  # the crop taken from the decoded frame (resolution check)
        self.global_crop = RandomResizedCrop(aug.global_crop_size, aug.global_crops_scale)
        self.local_crop = RandomResizedCrop(aug.local_crop_size, aug.local_crops_scale)
        self.global_colour = BatchedPhotometric(aug.global_crop_size, blur_p=0.1)
        self.local_colour = BatchedPhotometric(aug.local_crop_size, blur_p=0.5)

    def loader_stage(self, clip: torch.Tensor) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> (T, 3, P, P): the pre-crop, one box for the clip."""
        check_clip(clip, "DoRA clip views")
        # a channels-last view, no copy: torch's uint8 bicubic resize works in that layout
        return self.precrop(clip.permute(0, 3, 1, 2))

    def draw(self, shape: torch.Size) -> DoRADraw:
        """The draws of the previous per-frame pipeline after its pre-crop, in its order: global box,
        flip, global colour frame by frame, then per local view and frame its box and colour."""
        t, _, h, w = shape
        box = self.global_crop.draw(h, w)
        flip = coin(0.5)  # one flip for the clip
        g_batched, l_batched = (isinstance(c, BatchedPhotometric) for c in (self.global_colour, self.local_colour))
        g_colour = [self.global_colour.sample() for _ in range(t)] if g_batched else []
        l_boxes, l_colour = [], []
        for _ in range(self.num_locals):
            for _ in range(t):
                l_boxes.append(self.local_crop.draw(h, w))
                if l_batched:  # drawn right after the frame's crop, as the per-frame pipeline does
                    l_colour.append(self.local_colour.sample())
        return DoRADraw(box, flip, g_colour, l_boxes, l_colour)

    def apply(self, x: torch.Tensor, draws: Sequence[DoRADraw]) -> list[torch.Tensor]:
        """(B, T, 3, P, P) -> [global (B, T, 3, G, G), local_1 .. local_V (B, T, 3, L, L)].

        The V * T crops of every clip go through the colour ops as one stack: more of them share
        an op order, so each op call covers more images."""
        b, t = x.shape[:2]
        glob = []
        for clip, d in zip(x, draws):
            g = resized_crop(clip, d.global_box, self.global_crop.size)  # (T, 3, G, G), one box for the clip
            glob.append(g.flip(-1) if d.flip else g)
        views = [_colour(self.global_colour, glob, [c for d in draws for c in d.global_colour]).unflatten(0, (b, t))]
        if self.num_locals:
            size = self.local_crop.size
            crops = [resized_crop(clip[i % t], box, size) for clip, d in zip(x, draws) for i, box in enumerate(d.local_boxes)]
            local = _colour(self.local_colour, crops, [c for d in draws for c in d.local_colour])
            views += local.view(b, self.num_locals, t, *local.shape[1:]).unbind(1)  # V x (B, T, 3, L, L)
        return views


def _colour(colour, images: list[torch.Tensor], draws: list[FrameColour]) -> torch.Tensor:
    """The colour op on images (each (..., 3, S, S)) as one (N, 3, S, S) stack: a BatchedPhotometric
    with its draws, any other callable on the stacked images."""
    if isinstance(colour, BatchedPhotometric):
        flat = [im for stack in images for im in (stack if stack.dim() == 4 else [stack])]
        return colour.apply(flat, draws)
    return colour(torch.cat([im if im.dim() == 4 else im.unsqueeze(0) for im in images]))
