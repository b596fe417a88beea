"""`vidssl analyze`: lightness, scene cuts, frame change and object richness of videos or frame
stores, as PNGs a person reads at a glance and JSON (the paper's dataset analysis, §3.3)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="lightness, scene cuts, frame change and objects per frame of videos (the paper's dataset analysis)",
        description="Stream each video (or each video of a frame store, without decoding the original) once and "
                    "measure: mean CIE L* lightness over time (smoothed, rate of change per minute), scene cuts "
                    "(PySceneDetect content detector, cuts per hour), frame-to-frame change with blank and frozen "
                    "stretches, and with --weights the segments per frame of over-clustered patch features (an "
                    "unsupervised proxy of objects per frame). Writes NAME.json and NAME.png per input, and "
                    "comparison.png + summary.json for several inputs.",
    )
    p.add_argument("inputs", nargs="+", metavar="VIDEO_OR_STORE", help="video files, or frame stores (vidssl ingest)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNGs and JSON")
    p.add_argument("--weights", metavar="W",
                   help="encoder for object richness: our export, a run directory or checkpoint, an official "
                        "DINO/DoRA checkpoint, a timm state dict, or random:MODEL_NAME (default: none, no richness)")
    p.add_argument("--checkpoint-key", default="teacher", choices=("teacher", "student"),
                   help="network inside training checkpoints (default teacher)")
    p.add_argument("--sample-fps", type=float, default=None,
                   help="lightness samples per second (default: 1, more for clips under about 3 min, ~200 samples)")
    p.add_argument("--smooth-seconds", type=float, default=60.0,
                   help="moving-average window of the lightness curve, at most a fifth of the video (default 60)")
    p.add_argument("--size", type=int, default=224, help="short side frames are analysed at (default 224)")
    p.add_argument("--cut-threshold", type=float, default=27.0, help="ContentDetector threshold (default 27)")
    p.add_argument("--min-scene-len", type=int, default=15, help="shortest shot in frames (default 15)")
    p.add_argument("--richness-frames", type=int, default=100,
                   help="evenly spaced frames whose segments are counted (default 100)")
    p.add_argument("--clusters", type=int, default=24, help="k-means clusters of the over-clustering (default 24)")
    p.add_argument("--min-patches", type=int, default=3, help="smallest segment, in patches (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of random:MODEL_NAME (default 0)")
    p.add_argument("--device", default="auto", help="torch device for the encoder: auto, cpu, cuda:0 ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vidssl.errors import VidsslError
    from vidssl.io import ensure_dir, write_json
    from vidssl.viz.analysis_plots import plot_analysis, plot_comparison
    from vidssl.wtours.analyze import AnalyzeOptions, analyze_input, unique_names
    from vidssl.wtours.cuts import CutDetector
    from vidssl.wtours.source import check_input, open_inputs

    for name, v in (("--sample-fps", args.sample_fps), ("--size", args.size), ("--richness-frames", args.richness_frames),
                    ("--clusters", args.clusters), ("--min-patches", args.min_patches)):
        if v is not None and v <= 0:
            raise VidsslError(f"{name} must be positive, got {v}")
    for path in args.inputs:
        check_input(path)
    CutDetector(1.0)  # fail now, not after decoding, when the `scenes` extra is missing
    inputs = [inp for path in args.inputs for inp in open_inputs(path)]
    vit = None
    if args.weights:  # a bad --weights fails before any output is made
        from vidssl.eval.features import prepare_encoder

        vit, _, _ = prepare_encoder(args.weights, checkpoint_key=args.checkpoint_key, seed=args.seed, device=args.device)
        vit.eval()
    out = ensure_dir(Path(args.out))
    options = AnalyzeOptions(sample_fps=args.sample_fps, smooth_seconds=args.smooth_seconds, short_side=args.size,
                             cut_threshold=args.cut_threshold, min_scene_len=args.min_scene_len,
                             richness_frames=args.richness_frames, clusters=args.clusters,
                             min_patches=args.min_patches)
    results = []
    for inp, name in zip(inputs, unique_names([i.name for i in inputs])):
        r = analyze_input(inp, vit, options, progress=not args.no_progress)
        if any(prev["name"] == r["name"] for prev in results):
            r["name"] = name  # two inputs of one name: the figure and summary tell them apart by the file's
        if "richness" in r:
            r["richness"]["weights"] = args.weights
        write_json(out / f"{name}.json", r)
        plot_analysis(r, out / f"{name}.png")
        results.append(r)
        rich = f", {r['richness']['mean']:.1f} segments/frame" if "richness" in r else ""
        still = "; ".join(f"{s['kind']} {s['start_s']:.1f}-{s['end_s']:.1f} s" for s in r["stretches"]) or "none"
        print(f"{r['name']}: {r['duration_s']:.1f} s, L* {min(r['lightness']['values']):.1f}-"
              f"{max(r['lightness']['values']):.1f} (trend {r['lightness']['trend_per_min']:+.2f}/min, "
              f"mean |rate| {r['lightness']['mean_abs_rate_per_min']:.2f}/min), {r['cuts']['count']} "
              f"cut{'' if r['cuts']['count'] == 1 else 's'} "
              f"({r['cuts']['per_hour']:.0f}/h){rich}; blank/frozen: {still} -> {out / name}.png")
    if len(results) > 1:
        summary = [{k: r[k] for k in ("name", "path", "duration_s")} | {
            "cuts_per_hour": r["cuts"]["per_hour"], "lightness_mean_abs_rate_per_min": r["lightness"]["mean_abs_rate_per_min"],
            "lightness_trend_per_min": r["lightness"]["trend_per_min"],
            "segments_per_frame": r.get("richness", {}).get("mean")} for r in results]
        write_json(out / "summary.json", summary)
        plot_comparison(results, out / "comparison.png")
        print(f"comparison of {len(results)} inputs -> {out / 'comparison.png'}")
    if vit is None:
        print("object richness skipped: pass --weights (e.g. an export, or random:vit_tiny_patch16_224)")
    return 0
