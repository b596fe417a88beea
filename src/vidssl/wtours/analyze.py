"""`vidssl analyze`: the paper's dataset analysis (§3.3, Fig. 2) for any video or frame store,
in one streaming pass per input: lightness over time, scene cuts, frame-to-frame change (with
the blank and frozen stretches it reveals) and object richness per frame."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch.nn as nn
from tqdm import tqdm

from vidssl.data.blank import BlankThresholds
from vidssl.errors import VidsslError
from vidssl.wtours.change import ChangeMeter, finite_diffs, stretches
from vidssl.wtours.cuts import CutDetector
from vidssl.wtours.lightness import mean_lightness, summarise
from vidssl.wtours.richness import richness
from vidssl.wtours.source import Input, stream_frames


@dataclass(frozen=True)
class AnalyzeOptions:
    sample_fps: float | None = None  # lightness samples per second; None: auto_rates
    smooth_seconds: float = 60.0  # moving-average window of the lightness curve (shrinks for short videos)
    short_side: int = 224  # frames are analysed at this short side
    cut_threshold: float = 27.0  # PySceneDetect ContentDetector defaults
    min_scene_len: int = 15
    richness_frames: int = 100  # frames, evenly spaced, whose segments are counted
    clusters: int = 24  # k-means clusters of the over-clustering
    min_patches: int = 3  # a smaller region is not a segment
    change_bin_seconds: float | None = None  # the per-frame change is stored as means over bins this long
    thresholds: BlankThresholds = BlankThresholds()


def auto_rates(duration_s: float, fps: float) -> tuple[float, float]:
    """(lightness samples per second, change bin seconds) for a video this long: 1 sample and
    1 s bins for anything over about 3 min (an hour-long walk gives thousands of points), more for
    a short clip so its curves still have ~200-300 points; never finer than one frame."""
    duration_s = max(duration_s, 1.0 / fps)
    sample_fps = min(fps, max(1.0, 200.0 / duration_s))
    bin_s = min(1.0, max(1.0 / fps, duration_s / 300.0))
    return sample_fps, bin_s


def analyze_input(inp: Input, vit: nn.Module | None, options: AnalyzeOptions = AnalyzeOptions(),
                  progress: bool = True) -> dict:
    """Everything `vidssl analyze` reports on one input, as a JSON-ready dict."""
    fps = inp.fps if inp.fps > 0 else 1.0
    o = options
    auto_fps, auto_bin = auto_rates(inp.num_frames / fps, fps)  # from the header: known before decoding
    sample_fps = o.sample_fps or auto_fps
    bin_seconds = o.change_bin_seconds or auto_bin
    change = ChangeMeter()
    cuts = CutDetector(fps, o.cut_threshold, o.min_scene_len)
    light_t, light_v = [], []
    next_light = 0.0
    # evenly spaced over the whole video (by the header's count: frames that do not decode are missed)
    rich_targets = set(np.linspace(0, max(0, inp.num_frames - 1), min(o.richness_frames, max(1, inp.num_frames)))
                       .round().astype(int).tolist())
    rich_idx, rich_frames = [], []
    times = []
    bar = tqdm(total=inp.num_frames, desc=f"analyze {inp.name}", unit="frame", disable=not progress or None,
               leave=False, dynamic_ncols=True)
    try:
        for i, t, rgb in stream_frames(inp, o.short_side):
            change.add(i, rgb)
            cuts.add(i, rgb)
            times.append(t)
            if t + 1e-9 >= next_light:
                light_t.append(t)
                light_v.append(mean_lightness(rgb))
                next_light = t + 1.0 / sample_fps
            if vit is not None and i in rich_targets:
                rich_idx.append(i)
                rich_frames.append(rgb)
            bar.update(1)
    finally:
        bar.close()
    if not times:
        raise VidsslError(f"{inp.path}: no frame of {inp.name} could be decoded")
    stats = change.stats()
    indices = np.asarray(change.indices)
    duration = (indices[-1] + 1) / fps
    cut_frames = cuts.finish()
    found = stretches(stats, fps, o.thresholds)
    result = {
        "name": inp.name, "path": str(inp.path), "kind": inp.kind, "fps": inp.fps,
        "header_frames": inp.num_frames, "decoded_frames": int(len(indices)), "last_frame": int(indices[-1]),
        "duration_s": duration,
        "lightness": {"times": light_t, "values": light_v, "sample_fps": sample_fps,
                      **summarise(np.asarray(light_t), np.asarray(light_v), min(o.smooth_seconds, duration / 5))},
        "cuts": {"frames": cut_frames, "times": [c / fps for c in cut_frames], "count": len(cut_frames),
                 "per_hour": len(cut_frames) / (duration / 3600.0),
                 "detector": f"PySceneDetect ContentDetector(threshold={o.cut_threshold}, min_scene_len={o.min_scene_len})"},
        "change": _binned_change(indices, stats, fps, bin_seconds),
        "stretches": [{"kind": s.kind, "start": int(indices[s.start]), "end": int(indices[s.end - 1]) + 1,
                       "start_s": float(indices[s.start] / fps), "end_s": float((indices[s.end - 1] + 1) / fps)}
                      for s in found],
    }
    if vit is not None and rich_frames:
        counts, grid = richness(vit, np.stack(rich_frames), o.clusters, o.min_patches, o.short_side)
        result["richness"] = {"frames": rich_idx, "times": [i / fps for i in rich_idx], "segments": counts,
                              "mean": float(np.mean(counts)), "median": float(np.median(counts)),
                              "clusters": o.clusters, "min_patches": o.min_patches, "grid": list(grid)}
    return result


def _binned_change(indices: np.ndarray, stats: np.ndarray, fps: float, bin_seconds: float) -> dict:
    """Mean and minimum |diff| per bin (a frozen or blank stretch shows as a drop to ~0)."""
    d = finite_diffs(stats)
    # whole frames per bin: binning by seconds (i / fps / bin) rounds some frames into the wrong bin
    per_bin = max(1, int(round(bin_seconds * fps)))
    bin_seconds = per_bin / fps
    bins = np.asarray(indices, np.int64) // per_bin
    n = int(bins[-1]) + 1
    mean, low = np.full(n, np.nan), np.full(n, np.nan)
    for b in np.unique(bins):
        v = d[bins == b]
        v = v[np.isfinite(v)]
        if len(v):
            mean[b], low[b] = v.mean(), v.min()
    clean = lambda a: [None if math.isnan(x) else float(x) for x in a]  # noqa: E731 - JSON has no NaN
    return {"bin_seconds": bin_seconds, "times": [b * bin_seconds for b in range(n)],
            "mean_abs_diff": clean(mean), "min_abs_diff": clean(low),
            "overall_mean_abs_diff": float(np.nanmean(d)) if np.isfinite(d).any() else 0.0}


def unique_names(names: list[str]) -> list[str]:
    """File-safe names, made unique with -2, -3, ..."""
    out, seen = [], {}
    for n in names:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in n) or "video"
        seen[safe] = seen.get(safe, 0) + 1
        out.append(safe if seen[safe] == 1 else f"{safe}-{seen[safe]}")
    return out
