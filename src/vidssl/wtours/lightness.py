"""Lightness over time: mean CIE L* of frames sampled at a fixed rate, a smoothed curve and its
rate of change per minute (the paper's "gradual natural transitions in lighting"; the paper does
not say how it measured lightness, SPEC §2, so this is our definition).

L* depends only on the relative luminance Y: sRGB values are linearised (IEC 61966-2-1), Y is
their Rec. 709 / D65 weighted sum, and L* = 116 f(Y) - 16 with the CIE cube-root f.
"""

from __future__ import annotations

import numpy as np

_c = np.arange(256, dtype=np.float64) / 255.0
_LINEAR = np.where(_c <= 0.04045, _c / 12.92, ((_c + 0.055) / 1.055) ** 2.4)  # sRGB decoding, as a table
_Y_WEIGHTS = np.array([0.2126, 0.7152, 0.0722])
_EPS = (6 / 29) ** 3


def lightness_of_y(y: np.ndarray) -> np.ndarray:
    """CIE L* (0-100) of relative luminance Y in [0, 1] (white Y = 1)."""
    y = np.asarray(y, np.float64)
    return np.where(y > _EPS, 116.0 * np.cbrt(y) - 16.0, (29 / 3) ** 3 * y)


def mean_lightness(rgb: np.ndarray) -> float:
    """Mean L* over the pixels of a uint8 (H, W, 3) sRGB frame."""
    y = _LINEAR[rgb] @ _Y_WEIGHTS
    return float(lightness_of_y(y).mean())


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over `window` samples, shrinking at the ends (same length)."""
    v = np.asarray(values, np.float64)
    if window <= 1 or len(v) < 2:
        return v.copy()
    window = min(window, len(v))
    kernel = np.ones(window)
    num = np.convolve(v, kernel, mode="same")
    den = np.convolve(np.ones_like(v), kernel, mode="same")
    return num / den


def summarise(times: np.ndarray, values: np.ndarray, smooth_seconds: float) -> dict:
    """Smoothed curve, its rate of change (L* per minute) and the overall trend (least-squares
    slope, L* per minute)."""
    t = np.asarray(times, np.float64)
    v = np.asarray(values, np.float64)
    if len(t) < 2:
        return {"smoothed": v.tolist(), "rate_per_min": [0.0] * len(v), "trend_per_min": 0.0,
                "mean_abs_rate_per_min": 0.0, "range": 0.0}
    step = float(np.median(np.diff(t))) or 1.0
    s = smooth(v, max(1, int(round(smooth_seconds / step))))
    rate = np.gradient(s, t) * 60.0
    slope = float(np.polyfit(t, v, 1)[0] * 60.0)
    return {"smoothed": s.tolist(), "rate_per_min": rate.tolist(), "trend_per_min": slope,
            "mean_abs_rate_per_min": float(np.abs(rate).mean()), "range": float(v.max() - v.min())}
