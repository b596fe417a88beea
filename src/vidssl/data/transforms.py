"""Augmentation primitives on uint8 tensors, with the colour ops batched over the images of a clip.

Views leave the data loader as uint8 (smaller to move between processes and to the GPU) and
are normalised on the device by `normalize`.

The colour ops take a stack of images, each with its own factor, and reproduce
torchvision.transforms.v2's uint8 kernels applied image by image (to float rounding: at most one
grey level, rarely). Their stacks are float32 (N, 3, H, W) holding whole numbers in [0, 255]:
every op ends by truncating, as torchvision's cast back to uint8 does after each op, so a chain of
ops sees torchvision's intermediate values without the uint8 round trips. `BatchedPhotometric`
draws DINO's colour parameters per image exactly as the torchvision Compose does and runs the ops
on stacks; `RandomResizedCrop` draws torchvision's boxes. Both take their randomness from torch's
global RNG only (the loader seeds it per sample) and are picklable.

Every op is device-agnostic: the same code makes the views in a loader worker (CPU) or inside the
training step on the accelerator (`ClipViews`, `LoaderStage`, docs/data.md "Two view paths").
On CPU the uint8 resize and the per-image chunking below are the tuned loader paths; on other
devices the resize goes through float (torch's antialiased uint8 resize is CPU-only) and a colour
op covers every image of a run at once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BICUBIC = v2.InterpolationMode.BICUBIC


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float (..., 3, H, W) with ImageNet statistics, on x's device."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return (x.float().div_(255.0) - mean) / std


def cpu_kernels(x: torch.Tensor) -> bool:
    """Whether x takes the CPU-tuned paths (uint8 resize, per-image chunks) or the accelerator's
    (float resize, gathered stacks); a function so the tests can run the accelerator's on a CPU."""
    return x.device.type == "cpu"


def blur_kernel_size(crop_size: int) -> int:
    """An odd kernel of about a tenth of the crop, so sigma in [0.1, 2] means the same at any size."""
    return max(3, (crop_size // 10) | 1)


# --- batched colour ops --------------------------------------------------------------------------
# x: float32 (N, 3, H, W) holding whole numbers in [0, 255]; factors: (N,), one per image. Each op
# overwrites x with its result and returns it: in place, to keep allocations and memory traffic
# (what these elementwise ops cost on a loader core) down.


def _per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) factors (drawn on the CPU) -> float32 (N, 1, 1, 1) on like's device, to broadcast over each image."""
    return values.to(device=like.device, dtype=torch.float32).view(-1, 1, 1, 1)


def luma(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) unrounded ITU-R 601 luma, in torchvision's operation order."""
    r, g, b = x.unbind(dim=1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def _blend_(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """x <- x * ratio + other * (1 - ratio), clamped and truncated (torchvision's `_blend` + uint8 cast).

    other: (N, 1, H, W). ratio: float64 (N,); 1 - ratio is taken in float64 first, as torchvision
    does with a Python float, and addcmul_ rounds as torchvision's `add_(other, alpha=1 - ratio)`
    does (the tests check it). Values are >= 0 after the clamp, so floor is the cast's
    truncation (and several times faster than trunc on CPU).
    """
    return x.mul_(_per_image(ratio, x)).addcmul_(other, _per_image(1.0 - ratio, x)).clamp_(0, 255).floor_()


def brightness_(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-image `F.adjust_brightness`: x * factor."""
    return x.mul_(_per_image(factor, x)).clamp_(0, 255).floor_()


def contrast_(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-image `F.adjust_contrast`: blend with the image's mean (floored) luma."""
    mean = luma(x).floor_().mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    # mean * (1 - factor) as one per-image constant: rounds as torchvision's broadcast
    # add_(mean, alpha=1 - factor) does, and a multiply-add with two broadcast operands is slow
    offset = mean.mul_(_per_image(1.0 - factor, x))
    return x.mul_(_per_image(factor, x)).add_(offset).clamp_(0, 255).floor_()


def saturation_(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-image `F.adjust_saturation`: blend with each pixel's (floored) luma."""
    return _blend_(x, luma(x).floor_(), factor)


def hue_(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Per-image `F.adjust_hue`: rotate the HSV hue by shift in [-0.5, 0.5] turns.

    Only the hue moves (min, max and chroma = max - min are kept), so it is computed in sextants
    (turns * 6; red at 0, green at 2, blue at 4) and each channel is rebuilt from the HSV
    hexcone's trapezoid, min + chroma * clamp(||hue - centre| - 3| - 1, 0, 1): torchvision's
    sextant table without a gather. The maximal channel picks the hue formula through arithmetic
    masks (torch.where is slow on CPU): channel / max is exactly 1 on the maximal channel (whole
    numbers); where two channels tie, both formulas give the same hue.
    """
    r, g, b = x.unbind(dim=1)
    maxc = torch.maximum(torch.maximum(r, g), b)  # (N, H, W)
    minc = torch.minimum(torch.minimum(r, g), b)
    chroma = maxc - minc
    top = maxc.clamp(min=1.0)  # black: 0 / 1, not 0 / 0
    hue = (r - g).add_(chroma, alpha=4.0)  # blue maximal: 4 + (r - g) / chroma, times chroma
    hue.add_((g - b).sub_(hue).mul_(r.div(top).floor_()))  # red maximal: (g - b) / chroma
    hue.add_((b - r).add_(chroma, alpha=2.0).sub_(hue).mul_(g.div(top).floor_()))  # green: 2 + (b - r) / chroma
    hue.div_(chroma.clamp(min=1.0)).add_(_per_image(shift * 6.0, x).view(-1, 1, 1))  # (N, H, W) in [-4, 8)
    hue.sub_(torch.mul(hue, 1.0 / 6.0).floor_().mul_(6.0))  # mod 6: within 6 of every centre
    for channel, centre in enumerate((0.0, 2.0, 4.0)):
        torch.sub(hue, centre, out=x[:, channel])
    x.abs_().sub_(3.0).abs_().sub_(1.0).clamp_(0.0, 1.0)  # each channel's level in [0, 1]
    # torchvision goes through [0, 1] and back with x * (255 + 1 - 1e-3) before truncating
    scale = (256.0 - 1e-3) / 255.0
    return torch.addcmul(minc.mul_(scale).unsqueeze_(1), chroma.mul_(scale).unsqueeze_(1), x, out=x).floor_()


def grayscale_(x: torch.Tensor) -> torch.Tensor:
    """`F.rgb_to_grayscale(num_output_channels=3)` of every image: truncated luma in all channels."""
    return x.copy_(luma(x).floor_().expand_as(x))


def gaussian_kernels(kernel_size: int, sigma: torch.Tensor) -> torch.Tensor:
    """(N,) sigmas -> float32 (N, kernel_size) 1-D kernels, torchvision's (softmax over a fixed grid)."""
    lim = (kernel_size - 1) / (2.0 * 2.0**0.5)
    grid = torch.linspace(-lim, lim, kernel_size, device=sigma.device)  # (K,)
    return torch.softmax((grid / sigma.to(torch.float32).view(-1, 1)).pow(2).neg(), dim=1)


def gaussian_blur_(x: torch.Tensor, kernel_size: int, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image `F.gaussian_blur` (reflect padding, rounded) with sigma (N,).

    torchvision convolves with the outer product of the 1-D kernel; two 1-D passes give the same
    sums (up to float rounding) for 2K instead of K^2 multiplies per pixel. Each pass is K
    shifted multiply-adds with per-image weights: on one core that beats a grouped convolution,
    whose cost grows badly with the number of groups (images x channels).
    """
    n, _, h, w = x.shape
    pad = kernel_size // 2
    taps = gaussian_kernels(kernel_size, sigma.to(x.device)).view(n, 1, kernel_size, 1, 1).unbind(dim=2)  # K x (N, 1, 1, 1)
    rows = F.pad(x, [0, 0, pad, pad], mode="reflect")  # (N, 3, H + 2 pad, W)
    out = rows[:, :, :h] * taps[0]
    for k in range(1, kernel_size):
        out.addcmul_(rows[:, :, k : k + h], taps[k])
    cols = F.pad(out, [pad, pad, 0, 0], mode="reflect")  # (N, 3, H, W + 2 pad)
    torch.mul(cols[..., :w], taps[0], out=x)
    for k in range(1, kernel_size):
        x.addcmul_(cols[..., k : k + w], taps[k])
    return x.round_()


def solarize_(x: torch.Tensor, threshold: float = 128.0) -> torch.Tensor:
    """`F.solarize` of every image: invert the levels at or above threshold."""
    return x.copy_(torch.where(x >= threshold, 255.0 - x, x))


# --- DINO's colour pipeline, drawn per image and applied to a stack ---------------------------------

# ColorJitter(0.4, 0.4, 0.2, 0.1) ranges; op ids follow torchvision: 0 brightness, 1 contrast,
# 2 saturation, 3 hue.
JITTER_RANGES = ((0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1))
JITTER_OPS: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = (
    brightness_, contrast_, saturation_, hue_,
)
# Images per op call: about 2^17 values (one 224^2 image, three 112^2) keeps a call's temporaries
# cache-sized; larger stacks ran slower on one core, smaller ones pay more per-call overhead.
_CHUNK_VALUES = 1 << 17


class FrameColour(NamedTuple):
    """One image's colour parameters."""

    jitter_order: tuple[int, ...]  # order the jitter ops run in; () when jitter is skipped
    jitter_factors: tuple[float, ...]  # brightness, contrast, saturation, hue (when jittered)
    grayscale: bool
    blur_sigma: float  # 0.0: no blur
    solarize: bool


def coin(p: float) -> bool:
    """True with probability p, drawn as torchvision's RandomApply draws it: one torch.rand(1)
    (even when p is 1), compared with p in float32."""
    return torch.rand(1).item() < _float32(p)


@functools.cache
def _float32(p: float) -> float:
    return torch.tensor(p, dtype=torch.float32).item()


def _runs(keys: Sequence[object]) -> list[tuple[int, int, object]]:
    """(start, end, key) of the maximal runs of equal keys."""
    runs, start = [], 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            runs.append((start, i, keys[start]))
            start = i
    return runs


class BatchedPhotometric:
    """DINO's colour pipeline (SPEC 1.4 step 3b) for a stack of images, each with its own draw.

    Per image: ColorJitter(0.4, 0.4, 0.2, 0.1) with p=jitter_p (the four ops in a random order),
    grayscale with p=grayscale_p, Gaussian blur (sigma in [0.1, 2]) with p=blur_p, solarisation
    with p=solarize_p. `sample` draws one image's parameters from torch's global RNG with the same
    calls, in the same order, as the equivalent torchvision.transforms.v2 Compose, so a seeded
    run gives the same augmentations as torchvision's per-frame pipeline.
    """

    def __init__(
        self, crop_size: int, blur_p: float, solarize_p: float = 0.0, jitter_p: float = 0.8, grayscale_p: float = 0.2
    ) -> None:
        self.kernel_size = blur_kernel_size(crop_size)
        self.blur_p, self.solarize_p = blur_p, solarize_p
        self.jitter_p, self.grayscale_p = jitter_p, grayscale_p

    def sample(self) -> FrameColour:
        order: tuple[int, ...] = ()
        factors: tuple[float, ...] = ()
        if coin(self.jitter_p):
            order = tuple(torch.randperm(4).tolist())
            factors = tuple(torch.empty(1).uniform_(lo, hi).item() for lo, hi in JITTER_RANGES)
        grayscale = coin(self.grayscale_p)
        sigma = 0.0
        if self.blur_p > 0 and coin(self.blur_p):
            sigma = torch.empty(1).uniform_(0.1, 2.0).item()
        solarize = self.solarize_p > 0 and coin(self.solarize_p)
        return FrameColour(order, factors, grayscale, sigma, solarize)

    def apply(self, images: torch.Tensor | Sequence[torch.Tensor], params: Sequence[FrameColour]) -> torch.Tensor:
        """uint8 (N, 3, S, S) (a stack, or N images) and N parameter sets -> uint8 (N, 3, S, S).

        Images with the same jitter order are grouped (sorted), and each group goes through its
        ops in chunks of a few images: every op call covers the whole chunk, whose float copy
        stays in cache from the uint8 cast in to the cast out.
        """
        n = len(images)
        if len(params) != n:
            raise ValueError(f"{len(params)} colour draws for {n} images")
        # same order, then the same tail ops, next to each other
        order = sorted(range(n), key=lambda i: (params[i].jitter_order, params[i].grayscale, params[i].blur_sigma > 0))
        shape = tuple(images[0].shape)  # (3, S, S)
        if not cpu_kernels(images[0]):  # an accelerator: one gather, each op on a whole run, one scatter
            return self._apply_gathered(images, params, order)
        chunk = max(1, _CHUNK_VALUES // images[0].numel())
        buffer = torch.empty((min(chunk, n), *shape), dtype=torch.float32)  # reused by every chunk
        out = torch.empty((n, *shape), dtype=torch.uint8)
        for start, end, _ in _runs([params[i].jitter_order for i in order]):
            for a in range(start, end, chunk):
                self._apply_chunk(images, params, order[a : min(a + chunk, end)], buffer, out)
        return out

    def _apply_gathered(
        self, images: torch.Tensor | Sequence[torch.Tensor], params: Sequence[FrameColour], order: list[int]
    ) -> torch.Tensor:
        """`apply` off the CPU: per-image copies would be one kernel launch each (thousands a step),
        so the images are stacked and gathered once in sorted order, every op runs on a whole run
        of equal jitter order, and the result is scattered back once."""
        stack = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
        index = torch.tensor(order, device=stack.device)
        x = stack.index_select(0, index).to(torch.float32)
        p = [params[i] for i in order]
        self._colour_ops(x, p)
        out = torch.empty_like(stack, dtype=torch.uint8)
        out[index] = x.to(torch.uint8)  # whole numbers in [0, 255]
        return out

    def _apply_chunk(
        self, images: torch.Tensor | Sequence[torch.Tensor], params: Sequence[FrameColour], rows: list[int],
        buffer: torch.Tensor, out: torch.Tensor,
    ) -> None:
        """The images `rows` (same jitter order) through every op, into out[rows]."""
        x = buffer[: len(rows)]  # (n, 3, S, S) whole numbers, planar
        for k, i in enumerate(rows):
            x[k].copy_(images[i])  # resized crops come channels-last: cast and transpose in one copy
        self._colour_ops(x, [params[i] for i in rows])
        # whole numbers in [0, 255]: going through int32 is the same cast, and several times
        # faster than float -> uint8 on CPU
        levels = x.to(torch.int32)
        for k, i in enumerate(rows):
            out[i].copy_(levels[k])

    def _colour_ops(self, x: torch.Tensor, p: Sequence[FrameColour]) -> None:
        """Every op of the draws p on x (n, 3, S, S) float, in place; p sorted by jitter order
        (grayscale, blur next), so each op runs once per run of images that take it."""
        for start, end, jitter in _runs([q.jitter_order for q in p]):
            if jitter:
                factors = torch.tensor([q.jitter_factors for q in p[start:end]], dtype=torch.float64)  # (n, 4)
                for op in jitter:
                    JITTER_OPS[op](x[start:end], factors[:, op])
        for start, end, gray in _runs([q.grayscale for q in p]):
            if gray:
                grayscale_(x[start:end])
        for start, end, blur in _runs([q.blur_sigma > 0 for q in p]):
            if blur:
                gaussian_blur_(x[start:end], self.kernel_size, torch.tensor([q.blur_sigma for q in p[start:end]]))
        for start, end, solarize in _runs([q.solarize for q in p]):
            if solarize:
                solarize_(x[start:end])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, S, S) -> uint8 (N, 3, S, S), parameters drawn image by image."""
        return self.apply(images, [self.sample() for _ in range(images.shape[0])])


# --- geometry ------------------------------------------------------------------------------------


def resized_crop(images: torch.Tensor, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> uint8 (..., 3, size, size): crop box (top, left, height, width), resize.

    The same bicubic, antialiased uint8 resize as torchvision's `F.resized_crop`, called
    directly (that saves a third of a small crop's time).
    """
    top, left, height, width = box
    crop = images[..., top : top + height, left : left + width]
    if (height, width) == (size, size):
        return crop
    if not cpu_kernels(crop):  # torch's antialiased uint8 resize is CPU-only: float, rounded back
        batch = crop if crop.dim() == 4 else crop.unsqueeze(0)
        out = F.interpolate(batch.float(), size=[size, size], mode="bicubic", align_corners=False, antialias=True)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
        return out if crop.dim() == 4 else out.squeeze(0)
    # torch's uint8 path wants a dense channels-last input: a crop view would be copied anyway,
    # and this copy is the cheaper one
    batch = (crop if crop.dim() == 4 else crop.unsqueeze(0)).contiguous(memory_format=torch.channels_last)
    out = F.interpolate(batch, size=[size, size], mode="bicubic", align_corners=False, antialias=True)
    return out if crop.dim() == 4 else out.squeeze(0)


class RandomResizedCrop:
    """`v2.RandomResizedCrop(size, scale, ratio=(3/4, 4/3), bicubic, antialias=True)` for uint8 tensors.

    `draw` makes torchvision's box draw with the same RNG calls in the same order (so a seeded run
    crops where torchvision would) at a third of its overhead, which counts with 50 crops a clip.
    """

    def __init__(self, size: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        self.size, self.scale, self.ratio = size, scale, ratio
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def mean_upsampling(self, height: int, width: int) -> float:
        """How much the crop enlarges its source pixels on average in a height x width image:
        output side / sqrt(box area), averaged over the boxes `draw` accepts (area a uniform
        fraction s of the image, log-uniform aspect, the box inside the image), on a grid.
        Below 1 means downsampling."""
        (a, b), (lo, hi) = self.scale, self.log_ratio
        total = weight = 0.0
        for i in range(64):
            s = a + (b - a) * (i + 0.5) / 64
            for j in range(16):
                r = math.exp(lo + (hi - lo) * (j + 0.5) / 16)
                if math.sqrt(s * height * width * r) <= width and math.sqrt(s * height * width / r) <= height:
                    total += self.size / math.sqrt(s * height * width)
                    weight += 1
        return total / weight if weight else self.size / min(height, width)  # no box fits: the centre crop

    def draw(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of a box in a height x width image."""
        area = height * width
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(self.scale[0], self.scale[1]).item()
            aspect_ratio = torch.exp(torch.empty(1).uniform_(self.log_ratio[0], self.log_ratio[1])).item()
            w = int(round(math.sqrt(target_area * aspect_ratio)))
            h = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, size=(1,)).item())
                left = int(torch.randint(0, width - w + 1, size=(1,)).item())
                return top, left, h, w
        # ten misses: the central crop of the nearest allowed ratio, as torchvision falls back
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, H, W) -> (..., 3, size, size), one box for all leading images."""
        return resized_crop(images, self.draw(*images.shape[-2:]), self.size)


# --- the two view paths ----------------------------------------------------------------------------


class ClipViews:
    """Base of the methods' clip views, split where the loader may stop (docs/data.md "Two view paths").

    - `loader_stage(clip)`: uint8 (T, H, W, 3) -> a uint8 tensor whose size is the same for every
      clip of a run (so a batch collates); it may draw (DoRA's shared pre-crop does);
    - `draw(shape)`: every remaining random parameter of one sample, from torch's global CPU RNG,
      with the calls in the order the views have always made them; shape: loader_stage's output's;
    - `apply(x, draws)`: a batch x (B, *shape) on any device and B draws -> the views, each
      (B, T, 3, S, S) uint8. No randomness here, so where it runs cannot change what it makes.

    `__call__` is the loader path: the three in a row for one clip (a batch of one), so both paths
    run the same code and, for the same seed, the same draws.
    """

    def loader_stage(self, clip: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def draw(self, shape: torch.Size) -> object:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, draws: Sequence[object]) -> list[torch.Tensor]:
        raise NotImplementedError

    def __call__(self, clip: torch.Tensor) -> list[torch.Tensor]:
        x = self.loader_stage(clip)
        return [v.squeeze(0) for v in self.apply(x.unsqueeze(0), [self.draw(x.shape)])]

    def on_device(
        self, batch: Sequence[torch.Tensor], to_device: Callable[[torch.Tensor], torch.Tensor]
    ) -> list[torch.Tensor]:
        """The accelerator path's second half: a collated `LoaderStage` batch [x (B, ...), RNG states
        (B, n)] -> the views on to_device's device. Each sample's draws continue its own RNG stream
        where the loader stage left it (a per-sample loop of small CPU calls; the global RNG is
        restored after, so drop path and the rest of training draw as on the loader path); the ops
        then run once for the batch where the draws allow it (`apply`)."""
        if len(batch) != 2 or batch[1].dtype != torch.uint8 or batch[1].dim() != 2:
            raise ValueError("views on the device expect a LoaderStage batch [clips, RNG states]")
        x, states = batch
        draws = []
        with torch.random.fork_rng(devices=[]):
            for state in states:
                torch.set_rng_state(state.clone())  # its own storage: a row view crashes set_rng_state
                draws.append(self.draw(x.shape[1:]))
        with torch.no_grad():
            return self.apply(to_device(x), draws)


class LoaderStage:
    """The loader's share of the views under `aug.device=accelerator`: clip -> [loader_stage(clip),
    the RNG state after it] (uint8 (5056,) for the CPU generator), both collated by the loader.
    Picklable; `source_crop` is the views' (the engine's resolution check reads it)."""

    def __init__(self, views: ClipViews) -> None:
        self.views = views
        self.source_crop = getattr(views, "source_crop", None)

    def __call__(self, clip: torch.Tensor) -> list[torch.Tensor]:
        return [self.views.loader_stage(clip), torch.get_rng_state()]


def check_clip(clip: torch.Tensor, what: str) -> None:
    if clip.dim() != 4 or clip.shape[-1] != 3 or clip.dtype != torch.uint8:
        raise ValueError(f"{what} need a uint8 clip (T, H, W, 3), got {clip.dtype} {tuple(clip.shape)}")
