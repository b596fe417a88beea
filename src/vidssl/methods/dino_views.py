"""DINO's multi-crop views (SPEC 1.4, DINO on frames): every frame of a clip cropped and coloured
independently, from the uint8 primitives of `vidssl.data.transforms`."""

from __future__ import annotations

import torch

from vidssl.config import AugConfig
from vidssl.data.transforms import BatchedPhotometric, FrameColour, RandomResizedCrop, coin


class MultiCropFrames:
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

    def __call__(self, clip: torch.Tensor) -> list[torch.Tensor]:
        frames = clip.permute(0, 3, 1, 2)  # (T, 3, H, W), a channels-last view: no copy
        views = []
        for i in range(self.num_globals):
            colour = self.global_colour[i % 2]
            crops, draws = self._crops(frames, self.global_crop, colour, 1)
            views.append(colour.apply(crops, draws))  # (T, 3, G, G)
        if self.num_locals:
            crops, draws = self._crops(frames, self.local_crop, self.local_colour, self.num_locals)
            views += self.local_colour.apply(crops, draws).split(len(frames))  # L x (T, 3, L, L)
        return views

    @staticmethod
    def _crops(
        frames: torch.Tensor, crop_fn: RandomResizedCrop, colour: BatchedPhotometric, num_views: int
    ) -> tuple[list[torch.Tensor], list[FrameColour]]:
        """(T, 3, H, W) -> num_views * T flipped crops (3, S, S) and their colour draws."""
        crops, draws = [], []
        for _ in range(num_views):
            for frame in frames:
                crop = crop_fn(frame)
                if coin(0.5):  # RandomHorizontalFlip(p=0.5), drawn after the crop
                    crop = crop.flip(-1)
                crops.append(crop)
                draws.append(colour.sample())
        return crops, draws
