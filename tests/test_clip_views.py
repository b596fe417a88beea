"""Batched colour ops and clip views against torchvision's per-frame ops and pipelines."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from vidssl.config import AugConfig
from vidssl.data.transforms import (
    BICUBIC, BatchedPhotometric, blur_kernel_size, brightness_, contrast_, gaussian_blur_, grayscale_, hue_,
    saturation_, solarize_,
)
from vidssl.methods.dino_views import MultiCropFrames
from vidssl.methods.dora_views import DoRAClipViews


def make_images(n: int = 6, h: int = 20, w: int = 28) -> torch.Tensor:
    """uint8 (n, 3, h, w) covering noise, smooth colour, grey, ties between channels, black and white."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g)
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, 3, 4, generator=g) * 255, size=(h, w), mode="bilinear")
    x[:, :, : h // 2, : w // 2] = smooth.round().to(torch.uint8)[:, :, : h // 2, : w // 2]
    x[:, :, :3, -6:] = x[:, :1, :3, -6:]  # grey
    x[:, 1, 3:5, -6:] = x[:, 0, 3:5, -6:]  # red == green
    x[:, 2, 5:7, -6:] = x[:, 1, 5:7, -6:]  # green == blue
    x[:, 2, 7:9, -6:] = x[:, 0, 7:9, -6:]  # red == blue
    x[:, :, 9, -6:-3] = 0
    x[:, :, 9, -3:] = 255
    x[:, :, 10, -6:] = torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1)  # pure red
    return x


def per_frame(op, x: torch.Tensor, *factors: list) -> torch.Tensor:
    """torchvision's uint8 functional op, image by image -> float (N, 3, H, W)."""
    return torch.stack([op(x[i], *(f[i] for f in factors)) for i in range(len(x))]).float()


def assert_close_levels(out: torch.Tensor, ref: torch.Tensor, max_diff: int = 1, max_frac: float = 1e-3) -> None:
    diff = (out.float() - ref.float()).abs()
    assert diff.max().item() <= max_diff, f"largest difference {diff.max().item()}"
    assert (diff > 0).float().mean().item() <= max_frac, f"{(diff > 0).float().mean().item():.2%} of levels differ"


@pytest.mark.parametrize(
    "op, tv_op, low, high",
    [
        (brightness_, TF.adjust_brightness, 0.3, 1.9),
        (contrast_, TF.adjust_contrast, 0.3, 1.9),
        (saturation_, TF.adjust_saturation, 0.0, 2.0),
        (hue_, TF.adjust_hue, -0.5, 0.5),
    ],
)
def test_batched_jitter_op_equals_torchvision_per_frame(op, tv_op, low, high) -> None:
    x = make_images()
    factors = torch.linspace(low, high, len(x), dtype=torch.float64)  # a different factor per image
    out = op(x.float(), factors)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.equal(out, out.round().clamp(0, 255)), "whole numbers in [0, 255], as uint8 would hold"
    assert_close_levels(out, per_frame(tv_op, x, factors.tolist()))


def test_hue_shift_of_zero_keeps_the_image_and_a_third_turn_cycles_the_primaries() -> None:
    x = make_images()
    assert_close_levels(hue_(x.float(), torch.zeros(len(x), dtype=torch.float64)), x, max_diff=1, max_frac=0.01)
    pure = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=torch.float32).view(3, 3, 1, 1)
    third = hue_(pure.clone(), torch.full((3,), 1 / 3, dtype=torch.float64))  # 120 degrees: red -> green -> blue
    assert torch.equal(third, pure.roll(-1, dims=0))


def test_batched_grayscale_and_solarize_equal_torchvision() -> None:
    x = make_images()
    assert torch.equal(grayscale_(x.float()), per_frame(lambda im: TF.rgb_to_grayscale(im, 3), x))
    assert torch.equal(solarize_(x.float()), per_frame(lambda im: TF.solarize(im, 128), x))


@pytest.mark.parametrize("kernel_size", [3, 11, 23])
def test_batched_blur_equals_torchvision_per_frame(kernel_size: int) -> None:
    x = make_images(h=30, w=36)
    sigma = torch.linspace(0.1, 2.0, len(x))
    out = gaussian_blur_(x.float(), kernel_size, sigma)
    ref = per_frame(lambda im, s: TF.gaussian_blur(im, [kernel_size] * 2, [s, s]), x, sigma.tolist())
    assert_close_levels(out, ref)


# --- the pipelines against the per-frame torchvision ones they replace, same seed, same draws ------


def reference_colour(crop_size: int, blur_p: float, solarize_p: float = 0.0) -> v2.Compose:
    ops: list[v2.Transform] = [v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), v2.RandomGrayscale(p=0.2)]
    if blur_p > 0:
        ops.append(v2.RandomApply([v2.GaussianBlur(blur_kernel_size(crop_size), sigma=(0.1, 2.0))], p=blur_p))
    if solarize_p > 0:
        ops.append(v2.RandomSolarize(threshold=128, p=solarize_p))
    return v2.Compose(ops)


def reference_crop(size: int, scale: tuple[float, float]) -> v2.RandomResizedCrop:
    return v2.RandomResizedCrop(size, scale=scale, interpolation=BICUBIC, antialias=True)


@pytest.mark.parametrize("blur_p, solarize_p", [(0.1, 0.0), (0.5, 0.0), (1.0, 0.0), (0.1, 0.2)])
def test_photometric_draws_and_applies_like_the_torchvision_compose(blur_p: float, solarize_p: float) -> None:
    x = make_images(n=64, h=24, w=24)
    colour = BatchedPhotometric(24, blur_p=blur_p, solarize_p=solarize_p)
    torch.manual_seed(0)
    draws = [colour.sample() for _ in range(len(x))]
    out = colour.apply(x, draws)
    torch.manual_seed(0)
    reference = reference_colour(24, blur_p, solarize_p)
    ref = torch.stack([reference(im) for im in x])
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert_close_levels(out, ref, max_diff=3)
    # every branch was taken, so the comparison covers them all
    assert len({d.jitter_order for d in draws if d.jitter_order}) > 10 and any(not d.jitter_order for d in draws)
    assert any(d.grayscale for d in draws) and any(d.blur_sigma > 0 for d in draws)
    assert any(d.solarize for d in draws) == (solarize_p > 0)
    # __call__ draws the same way
    torch.manual_seed(0)
    assert torch.equal(colour(x), out)


class ReferenceDoRAViews:
    """The per-frame torchvision DoRA views this module replaced (SPEC 1.4)."""

    def __init__(self, aug: AugConfig) -> None:
        g, lc = aug.global_crop_size, aug.local_crop_size
        self.num_locals = aug.local_crops_number
        self.precrop = reference_crop(aug.precrop_size, aug.precrop_scale)
        self.global_geometry = v2.Compose([reference_crop(g, aug.global_crops_scale), v2.RandomHorizontalFlip(p=0.5)])
        self.global_colour = reference_colour(g, blur_p=0.1)
        self.local_crop = reference_crop(lc, aug.local_crops_scale)
        self.local_colour = reference_colour(lc, blur_p=0.5)

    def __call__(self, clip: torch.Tensor) -> list[torch.Tensor]:
        pre = self.precrop(tv_tensors.Video(clip.permute(0, 3, 1, 2).contiguous()))
        glob = self.global_geometry(pre)
        views = [torch.stack([self.global_colour(f) for f in glob.as_subclass(torch.Tensor)])]
        frames = pre.as_subclass(torch.Tensor)
        for _ in range(self.num_locals):
            views.append(torch.stack([self.local_colour(self.local_crop(f)) for f in frames]))
        return views


class ReferenceMultiCrop:
    """The per-frame torchvision DINO multi-crop this module replaced."""

    def __init__(self, aug: AugConfig) -> None:
        g, lc = aug.global_crop_size, aug.local_crop_size
        colour = [reference_colour(g, blur_p=1.0), reference_colour(g, blur_p=0.1, solarize_p=0.2)]
        flip = v2.RandomHorizontalFlip(p=0.5)
        self.views = [
            v2.Compose([reference_crop(g, aug.global_crops_scale), flip, colour[i % 2]])
            for i in range(aug.global_crops_number)
        ]
        self.views += [
            v2.Compose([reference_crop(lc, aug.local_crops_scale), flip, reference_colour(lc, blur_p=0.5)])
            for _ in range(aug.local_crops_number)
        ]

    def __call__(self, clip: torch.Tensor) -> list[torch.Tensor]:
        return [torch.stack([t(f) for f in clip.permute(0, 3, 1, 2)]) for t in self.views]


AUG = AugConfig(precrop_size=96, global_crop_size=64, local_crop_size=32, global_crops_number=2, local_crops_number=3)


def make_clip(t: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    smooth = torch.rand(t, 3, 10, 14, generator=g) * 255
    smooth = torch.nn.functional.interpolate(smooth, size=(90, 126), mode="bicubic")
    noise = torch.randint(-20, 21, (t, 3, 90, 126), generator=g)
    return (smooth + noise).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()  # (T, H, W, 3)


@pytest.mark.parametrize(
    "ours, reference", [(DoRAClipViews, ReferenceDoRAViews), (MultiCropFrames, ReferenceMultiCrop)]
)
def test_clip_views_equal_the_per_frame_torchvision_pipeline_for_a_seed(ours, reference) -> None:
    aug = AUG if ours is MultiCropFrames else dataclasses.replace(AUG, global_crops_number=1)
    fn, ref_fn = ours(aug), reference(aug)
    clip = make_clip()
    for seed in range(3):
        torch.manual_seed(seed)
        views = fn(clip)
        torch.manual_seed(seed)
        ref_views = ref_fn(clip)
        assert [v.shape for v in views] == [v.shape for v in ref_views]
        assert all(v.dtype == torch.uint8 for v in views)
        for v, r in zip(views, ref_views):
            assert_close_levels(v, r, max_diff=3)


def test_clip_views_pickle_and_draw_only_from_the_global_rng() -> None:
    clip = make_clip()
    for fn in (DoRAClipViews(AUG), MultiCropFrames(AUG)):
        copy = pickle.loads(pickle.dumps(fn))
        torch.manual_seed(3)
        a = fn(clip)
        torch.manual_seed(3)
        b = copy(clip)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
