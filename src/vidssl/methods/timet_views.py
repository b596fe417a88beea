"""TimeT's clip view (SPEC 5.2 item 2): one geometry and one colour draw for every frame of a clip.

clip uint8 (T, H, W, 3) -> [view (T, 3, S, S)] uint8, with, shared by all T frames:
1. one RandomResizedCrop to S (scale `global_crops_scale`, ratio 3/4-4/3, bicubic) of the frame;
2. one horizontal flip with p 0.5;
3. ColorJitter(0.8, 0.8, 0.8, 0.2) with p 0.8 (the four ops in a random order), grayscale p 0.2,
   Gaussian blur p 0.5 (sigma in [0.1, 2]).
Sharing everything keeps a patch's content at the same place of the grid from frame to frame
except for the motion itself, which is what the feature forwarder is meant to follow.

The official pipeline resizes the short side to 224 before the random crop; cropping the
decoded frame directly draws the same boxes (as fractions of the frame) and resamples once.
Normalisation happens on the device, in the method.

Under `aug.device=accelerator` the loader only decodes (the crop is taken from the decoded frame,
so the clips of a batch must share a size); in the step each clip is one resize of its T frames
(a loop over the batch) and the colour runs once on the stack of all B * T frames.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from vidssl.config import AugConfig
from vidssl.data.transforms import BatchedPhotometric, ClipViews, FrameColour, RandomResizedCrop, check_clip, coin, resized_crop

# ColorJitter(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2) as factor ranges
TIMET_JITTER_RANGES = ((0.2, 1.8), (0.2, 1.8), (0.2, 1.8), (-0.2, 0.2))


class TimeTDraw(NamedTuple):
    box: tuple[int, int, int, int]
    flip: bool
    colour: FrameColour


class TimeTClipViews(ClipViews):
    """Picklable transform for data-loader workers; randomness from torch's global RNG."""

    def __init__(self, aug: AugConfig) -> None:
        self.crop = RandomResizedCrop(aug.global_crop_size, aug.global_crops_scale)
        self.source_crop = self.crop  # the crop taken from the decoded frame (resolution check)
        self.colour = BatchedPhotometric(aug.global_crop_size, blur_p=0.5, jitter_p=0.8, grayscale_p=0.2)

    def draw_colour(self) -> FrameColour:
        """One colour draw for a whole clip, with TimeT's stronger jitter."""
        order: tuple[int, ...] = ()
        factors: tuple[float, ...] = ()
        if coin(self.colour.jitter_p):
            order = tuple(torch.randperm(4).tolist())
            factors = tuple(torch.empty(1).uniform_(lo, hi).item() for lo, hi in TIMET_JITTER_RANGES)
        grayscale = coin(self.colour.grayscale_p)
        sigma = torch.empty(1).uniform_(0.1, 2.0).item() if coin(self.colour.blur_p) else 0.0
        return FrameColour(order, factors, grayscale, sigma, False)

    def loader_stage(self, clip: torch.Tensor) -> torch.Tensor:
        """The decoded clip itself, uint8 (T, H, W, 3)."""
        check_clip(clip, "TimeT clip views")
        return clip

    def draw(self, shape: torch.Size) -> TimeTDraw:
        """One box, one flip, one colour for the clip, in that order."""
        box = self.crop.draw(shape[1], shape[2])
        flip = coin(0.5)
        return TimeTDraw(box, flip, self.draw_colour())

    def apply(self, x: torch.Tensor, draws: Sequence[TimeTDraw]) -> list[torch.Tensor]:
        """(B, T, H, W, 3) -> [view (B, T, 3, S, S)]."""
        b, t = x.shape[:2]
        frames = x.permute(0, 1, 4, 2, 3)  # (B, T, 3, H, W), a channels-last view
        images = []
        for clip, d in zip(frames, draws):
            view = resized_crop(clip, d.box, self.crop.size)  # one box for the clip
            images += (view.flip(-1) if d.flip else view).unbind(0)
        return [self.colour.apply(images, [d.colour for d in draws for _ in range(t)]).unflatten(0, (b, t))]
