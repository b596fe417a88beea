"""The GPU check: the `dora-vits16-wtours` recipe in bf16 on one GPU for a few minutes, from a
frame store of a generated 1080p video. Prints seconds per step, clips per second, peak GPU
memory, the share of step time spent waiting for data, and the collapse diagnostics at the end.
Then (unless --views-minutes 0) the same recipe for a shorter run with each view path of
`aug.device` (docs/data.md "Two view paths"): views made in the loader workers against views
made on the GPU in the step, clips/s and data wait of each side by side.

    python benchmarks/gpu_check.py --minutes 3             # what benchmarks/gpu_check.sh runs
    python benchmarks/gpu_check.py --small --minutes 0.5   # the same path on a CPU, tiny, to test the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def frames_1080p(n: int, size: tuple[int, int]):
    """The built-in sample's scene, upscaled: real motion and objects at the target size."""
    from PIL import Image

    from vidssl.data.sample import render_frames

    for frame in render_frames(seed=7, num_frames=n):
        yield np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget")
    ap.add_argument("--frames", type=int, default=900, help="frames of the generated video (25 fps)")
    ap.add_argument("--batch", type=int, default=16, help="clips per GPU")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--small", action="store_true", help="tiny ViT, 240p, CPU: checks the script, not the GPU")
    ap.add_argument("--views-minutes", type=float, default=1.0,
                    help="budget of each aug.device=loader / accelerator comparison run (0: none)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch

    from vidssl.config import load_config
    from vidssl.data.ingest import IngestOptions, ingest
    from vidssl.data.writer import write_video
    from vidssl.engine.trainer import Trainer

    root = args.out or Path(tempfile.mkdtemp(prefix="vidssl-gpu-check-"))
    root.mkdir(parents=True, exist_ok=True)
    size = (426, 240) if args.small else (1920, 1080)
    t0 = time.perf_counter()
    video = write_video(root / "walk_1080p.mp4", frames_1080p(args.frames, size), fps=25, gop=25)
    t1 = time.perf_counter()
    ingest([video], root / "store", IngestOptions(short_side=256 if args.small else 512), progress=False)
    t2 = time.perf_counter()
    print(f"video {size[0]}x{size[1]}, {args.frames} frames: written in {t1 - t0:.0f} s, ingested in {t2 - t1:.0f} s "
          f"({args.frames / (t2 - t1):.0f} frames/s)", flush=True)

    overrides = [f"data.store={str(root / 'store')!r}", f"data.batch_size={args.batch}", f"data.num_workers={args.workers}",
                 "engine.progress=false", "engine.log_every=1", "engine.checkpoint_every=100000",
                 "method.track_pictures_every=100000"]
    if args.small:
        overrides += ["model.arch=vit_tiny", "model.out_dim=1024", "aug.precrop_size=96", "aug.global_crop_size=64",
                      "aug.local_crop_size=32", "aug.local_crops_number=2", "data.frames_per_clip=4", "data.frame_stride=8",
                      "engine.accelerator=cpu", "engine.precision=null"]
    else:
        overrides += ["engine.precision=bf16-mixed"]
    cfg = load_config("dora-vits16-wtours", overrides)
    cuda = torch.cuda.is_available() and not args.small
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = Trainer(cfg, root / "run").fit(max_seconds=args.minutes * 60)
    rows, step_s, wait = measured(root / "run")
    print(f"\nGPU check: {torch.cuda.get_device_name() if cuda else 'CPU (--small)'}, {result['step']} steps in "
          f"{result['wall_time_s']:.0f} s, batch {args.batch} clips of T={cfg.data.frames_per_clip}")
    print(f"  seconds per step (median of steps 3..): {step_s:.3f}")
    print(f"  clips per second: {args.batch / step_s:.1f}")
    if cuda:
        print(f"  peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"  share of step time waiting for data: {100 * wait:.1f} %")
    last = rows[-1]
    diag = {k: round(v, 3) for k, v in last.items() if k in (
        "loss", "teacher_entropy", "teacher_batch_entropy", "kl", "center_norm", "mask_iou", "plan_distance")}
    print(f"  diagnostics at step {last['step']}: {diag} (log K = {np.log(cfg.model.out_dim):.2f})")

    if args.views_minutes > 0:
        print(f"\nviews in the loader ({args.workers} workers) against views on the device, {args.views_minutes:g} min each "
              f"(the main run above used aug.device={cfg.aug.device}, which resolves by engine.accelerator):", flush=True)
        for where in ("loader", "accelerator"):
            run_cfg = load_config("dora-vits16-wtours", [*overrides, f"aug.device={where}"])
            Trainer(run_cfg, root / f"run-{where}").fit(max_seconds=args.views_minutes * 60)
            _, step_s, wait = measured(root / f"run-{where}")
            print(f"  aug.device={where}: {args.batch / step_s:.1f} clips/s ({step_s:.3f} s a step, median of steps 3..), "
                  f"{100 * wait:.1f} % of step time waiting for data", flush=True)
    return 0


def measured(run_dir: Path) -> tuple[list[dict], float, float]:
    """A run's logged rows, its median seconds a step and its share of step time waiting for data."""
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    steady = rows[2:] or rows  # the first steps include start-up (workers, cuDNN autotune)
    step_s = statistics.median(r["step_s"] for r in steady)
    wait = sum(r["data_wait_s"] for r in steady) / sum(r["step_s"] for r in steady)
    return rows, step_s, wait


if __name__ == "__main__":
    sys.exit(main())
