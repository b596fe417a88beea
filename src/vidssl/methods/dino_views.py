"""DINO's multi-crop views (SPEC 1.4, DINO on frames): every frame of a clip cropped and coloured
independently, from the uint8 primitives of `vidssl.data.transforms`.

Under `aug.device=accelerator` the loader only decodes: every crop is taken from the decoded
frame (a resize there first would resample twice and change the views), so the clips go to the
device at their decoded size, which must then be the same for all clips of a batch (one store,
or videos of one size). In the step each crop is one resize (a loop over the B * T * (G + L)
crops); the colour ops run on each global view's and on all local crops' stack of the batch.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from vidssl.config import AugConfig
from vidssl.data.transforms import BatchedPhotometric, ClipViews, FrameColour, RandomResizedCrop, check_clip, coin, resized_crop

Box = tuple[int, int, int, int]


class ViewDraw(NamedTuple):
    """One view's draws for the frames of a clip (num_views * T of each, view-major)."""

    boxes: list[Box]
    flips: list[bool]
    colour: list[FrameColour]


class MultiCropFrames(ClipViews):
    """DINO multi-crop applied to every frame of a clip independently (DINO on frames, "DINO (WT)").

    clip uint8 (T, H, W, 3) -> [global_1, ..., global_G, local_1, ..., local_L], each (T, 3, S, S)
    uint8. Per view and frame: its own crop + flip and colour. Global 1 is always blurred, global 2
    is rarely blurred and sometimes solarised, locals are blurred half the time: DINO's recipe.
    Parameters are drawn view by view, frame by frame, as the per-frame torchvision Compose would
    draw them; then the colour ops run once per global view and once for all local crops.
    """

    def __init__(self, aug: AugConfig) -> None:
        g, lc = aug.global_crop_size, aug.local_crop_size
        self.num_globals, self.num_locals = aug.global_crops_number, aug.local_crops_number
        self.global_crop = RandomResizedCrop(g, aug.global_crops_scale)
        self.local_crop = RandomResizedCrop(lc, aug.local_crops_scale)
        self.source_crop = self.global_crop  # the largest crop taken from the decoded frame
        self.global_colour = [BatchedPhotometric(g, blur_p=1.0), BatchedPhotometric(g, blur_p=0.1, solarize_p=0.2)]
        self.local_colour = BatchedPhotometric(lc, blur_p=0.5)

    def loader_stage(self, clip: torch.Tensor) -> torch.Tensor:
        """The decoded clip itself, uint8 (T, H, W, 3)."""
        check_clip(clip, "DINO multi-crop views")
        return clip

    def draw(self, shape: torch.Size) -> list[ViewDraw]:
        """Per global view, then for all local views at once: per view and frame its box, flip and colour."""
        t, h, w, _ = shape
        draws = [self._draw(t, h, w, self.global_crop, self.global_colour[i % 2], 1) for i in range(self.num_globals)]
        if self.num_locals:
            draws.append(self._draw(t, h, w, self.local_crop, self.local_colour, self.num_locals))
        return draws

    @staticmethod
    def _draw(t: int, h: int, w: int, crop: RandomResizedCrop, colour: BatchedPhotometric, num_views: int) -> ViewDraw:
        d = ViewDraw([], [], [])
        for _ in range(num_views * t):
            d.boxes.append(crop.draw(h, w))
            d.flips.append(coin(0.5))  # RandomHorizontalFlip(p=0.5), drawn after the crop
            d.colour.append(colour.sample())
        return d

    def apply(self, x: torch.Tensor, draws: Sequence[list[ViewDraw]]) -> list[torch.Tensor]:
        """(B, T, H, W, 3) -> G x (B, T, 3, G, G) + L x (B, T, 3, L, L)."""
        b, t = x.shape[:2]
        frames = x.permute(0, 1, 4, 2, 3)  # (B, T, 3, H, W), a channels-last view: no copy
        views = []
        for i in range(self.num_globals):
            crops, colours = self._crops(frames, [d[i] for d in draws], self.global_crop.size)
            views.append(self.global_colour[i % 2].apply(crops, colours).unflatten(0, (b, t)))  # (B, T, 3, G, G)
        if self.num_locals:
            crops, colours = self._crops(frames, [d[-1] for d in draws], self.local_crop.size)
            local = self.local_colour.apply(crops, colours)  # (B * L * T, 3, L, L)
            views += local.view(b, self.num_locals, t, *local.shape[1:]).unbind(1)  # L x (B, T, 3, L, L)
        return views

    @staticmethod
    def _crops(frames: torch.Tensor, draws: list[ViewDraw], size: int) -> tuple[list[torch.Tensor], list[FrameColour]]:
        """(B, T, 3, H, W) and one ViewDraw per clip -> the flipped crops (3, S, S), clip-major, and their colours."""
        t = frames.shape[1]
        crops, colours = [], []
        for clip, d in zip(frames, draws):
            for i, (box, flip) in enumerate(zip(d.boxes, d.flips)):
                crop = resized_crop(clip[i % t], box, size)
                crops.append(crop.flip(-1) if flip else crop)
            colours += d.colour
        return crops, colours
