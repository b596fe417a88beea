"""Pictures of `vidssl analyze`: one 4-panel figure per input and one comparison figure for
several inputs (the paper's dataset-analysis figure, §3.3 Fig. 2, for the user's own videos).
They take the JSON-ready dicts `wtours.analyze.analyze_input` returns."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vidssl.viz.plots import plt, save_figure

RICHNESS_CAPTION = ("segments per frame: connected regions of over-clustered patch features "
                    "(an unsupervised proxy of objects per frame, not a detector count)")
STRETCH_COLOURS = {"blank": "0.35", "frozen": "tab:orange"}


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _cuts(n: int) -> str:
    return f"{n} scene cut{'' if n == 1 else 's'}"


def _encoder_note(results: list[dict]) -> str:
    names = sorted({r["richness"].get("weights", "?") for r in results if "richness" in r})
    return f"; encoder {', '.join(names)}" if names else ""


def _change_label(bin_seconds: float, fps: float) -> str:
    if fps > 0 and round(bin_seconds * fps) <= 1:
        return "mean |frame - previous frame|, every frame"
    return f"mean |frame - previous frame| over {bin_seconds:.3g} s bins"


def _time_unit(seconds: float) -> tuple[float, str]:
    if seconds < 180:
        return 1.0, "s"
    if seconds < 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def _shade_stretches(ax, result: dict, scale: float) -> None:
    seen = set()
    for s in result.get("stretches", []):
        label = f"{s['kind']} stretch" if s["kind"] not in seen else None
        seen.add(s["kind"])
        ax.axvspan(s["start_s"] / scale, s["end_s"] / scale, color=STRETCH_COLOURS.get(s["kind"], "0.5"),
                   alpha=0.3, label=label, linewidth=0)


def _cut_lines(ax, result: dict, scale: float) -> None:
    for k, t in enumerate(result["cuts"]["times"]):
        ax.axvline(t / scale, color="tab:red", alpha=0.5, linewidth=0.8, label="scene cut" if k == 0 else None)


def plot_analysis(result: dict, out_png: Path) -> Path:
    """Lightness, frame change, cuts and segments per frame of one input against time."""
    scale, unit = _time_unit(result["duration_s"])
    has_rich = "richness" in result
    fig, axes = plt.subplots(3 if has_rich else 2, 1, figsize=(10, 8.4 if has_rich else 6), dpi=100, sharex=True)
    lt = np.asarray(result["lightness"]["times"]) / scale
    light = result["lightness"]
    ax = axes[0]
    ax.plot(lt, light["values"], ".", color="tab:blue", alpha=0.35, markersize=3, label="mean L* of a frame")
    ax.plot(lt, light["smoothed"], color="tab:blue", linewidth=2, label="smoothed")
    _cut_lines(ax, result, scale)
    ax.set_ylabel("lightness L* (0-100)")
    ax.set_title(f"lightness: trend {light['trend_per_min']:+.2f} L*/min, mean |change| "
                 f"{light['mean_abs_rate_per_min']:.2f} L*/min, range {light['range']:.1f} L*", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[1]
    ch = result["change"]
    ct = np.asarray(ch["times"], np.float64) / scale
    mean = np.asarray([np.nan if v is None else v for v in ch["mean_abs_diff"]], np.float64)
    ax.plot(ct, mean, color="tab:green", linewidth=1.2, label=_change_label(ch["bin_seconds"], result["fps"]))
    _shade_stretches(ax, result, scale)
    _cut_lines(ax, result, scale)
    cuts = result["cuts"]
    ax.set_ylabel("frame change (luma 0-255)")
    n_st = len(result.get("stretches", []))
    ax.set_title(f"frame-to-frame change; {_cuts(cuts['count'])} ({cuts['per_hour']:.0f} per hour), "
                 f"{n_st} blank/frozen stretch{'es' if n_st != 1 else ''}", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)

    if has_rich:
        ax = axes[2]
        r = result["richness"]
        ax.plot(np.asarray(r["times"]) / scale, r["segments"], "o-", color="tab:purple", markersize=3, linewidth=1)
        ax.axhline(r["mean"], color="tab:purple", alpha=0.4, linestyle="--", label=f"mean {r['mean']:.1f}")
        ax.set_ylabel("segments per frame")
        ax.set_title("segments per frame: an unsupervised proxy of objects per frame, not a detector count\n"
                     "(connected regions of over-clustered patch features" + _encoder_note([result]) + ")", fontsize=9)
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(f"time ({unit})")
    fig.suptitle(f"{result['name']}: {_duration(result['duration_s'])}, {result['decoded_frames']} frames "
                 f"at {result['fps']:.2f} fps", fontsize=12)
    return save_figure(fig, out_png, dpi=100)


def plot_comparison(results: list[dict], out_png: Path) -> Path:
    """Several inputs side by side: lightness curves, cuts per hour, segments per frame, change."""
    names = [r["name"] for r in results]
    colours = [plt.cm.tab10(k % 10) for k in range(len(results))]
    longest = max(r["duration_s"] for r in results)
    scale, unit = _time_unit(longest)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), dpi=100)

    ax = axes[0, 0]
    for r, c in zip(results, colours):
        ax.plot(np.asarray(r["lightness"]["times"]) / scale, r["lightness"]["smoothed"], color=c, linewidth=2,
                label=f"{r['name']} ({r['lightness']['mean_abs_rate_per_min']:.1f} L*/min)")
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("lightness L* (smoothed)")
    ax.set_title("lightness over time (legend: mean |rate of change|)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[0, 1]
    per_hour = [r["cuts"]["per_hour"] for r in results]
    bars = ax.bar(range(len(results)), per_hour, color=colours)
    for b, r in zip(bars, results):
        ax.annotate(_cuts(r['cuts']['count']), (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(results)), names, rotation=15, fontsize=8)
    ax.set_ylabel("scene cuts per hour")
    ax.set_title("scene cuts per hour (PySceneDetect content detector)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")

    ax = axes[1, 0]
    rich = [r for r in results if "richness" in r]
    if rich:
        box = ax.boxplot([r["richness"]["segments"] for r in rich], patch_artist=True)
        for patch, r in zip(box["boxes"], rich):
            patch.set_facecolor(colours[results.index(r)])
            patch.set_alpha(0.6)
        ax.set_xticks(range(1, len(rich) + 1), [r["name"] for r in rich], rotation=15, fontsize=8)
        ax.set_ylabel("segments per frame")
        ax.set_title("object richness: segments per frame (unsupervised proxy)", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    else:
        ax.text(0.5, 0.5, "no encoder given (--weights)", ha="center", va="center")
        ax.set_axis_off()

    ax = axes[1, 1]
    data = [[v for v in r["change"]["mean_abs_diff"] if v is not None] or [0.0] for r in results]
    box = ax.boxplot(data, patch_artist=True)
    for patch, c in zip(box["boxes"], colours):
        patch.set_facecolor(c)
        patch.set_alpha(0.6)
    for k, r in enumerate(results):
        still = sum(s["end_s"] - s["start_s"] for s in r.get("stretches", []))
        if still:
            ax.annotate(f"{100 * still / r['duration_s']:.0f}% blank/frozen", (k + 1, ax.get_ylim()[1]),
                        ha="center", va="top", fontsize=8, color="tab:red")
    ax.set_xticks(range(1, len(results) + 1), names, rotation=15, fontsize=8)
    ax.set_ylabel("mean |frame - previous frame| (luma 0-255)")
    ax.set_title("frame-to-frame change (near 0: frozen or blank)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle("dataset analysis: " + ", ".join(f"{r['name']} ({_duration(r['duration_s'])})" for r in results),
                 fontsize=12)
    fig.text(0.5, 0.003, RICHNESS_CAPTION + _encoder_note(results), ha="center", fontsize=8, style="italic")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    return save_figure(fig, out_png, dpi=100)
