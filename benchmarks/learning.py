"""Does it learn? Train tiny DoRA and tiny DINO-on-frames on the same frames for the same steps,
score each teacher and random init of the same architecture on the built-in sample's ground truth
(label-propagation J&F, k-NN by object, clip-wise unsupervised segmentation by k-means: column
'unsup', mIoU), and print one table with the spread over random seeds.

    python benchmarks/learning.py                                  # built-in sample, 200 steps each
    python benchmarks/learning.py --video walk.mp4 --minutes 5     # real footage, a time budget per method
    python benchmarks/learning.py --methods dora optim.lr=0.1      # overrides apply to every method

The score is always on the sample's held-out ground truth (the only labelled data that ships),
so on real footage it measures transfer from that footage to the sample's objects.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def train(preset: str, method: str, overrides: list[str], steps: int | None, minutes: float | None, out: Path) -> dict:
    from vidssl.config import load_config
    from vidssl.engine.trainer import Trainer

    extra = [f"method.name={method}"]
    if method == "dino":  # DINO-on-frames: two global crops and DINO's multi-crop of every frame
        extra += ["aug.global_crops_number=2"]
    cfg = load_config(preset, extra + overrides)
    cfg.engine.progress = False
    return Trainer(cfg, out).fit(max_steps=steps, max_seconds=None if minutes is None else minutes * 60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="dotted config overrides for every method")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--methods", nargs="+", default=["dora", "dino"], choices=["dora", "dino"])
    ap.add_argument("--video", nargs="+", help="train on these videos instead of the built-in sample")
    ap.add_argument("--steps", type=int, help="steps per method (default: the preset's schedule)")
    ap.add_argument("--minutes", type=float, help="a wall-clock budget per method instead of steps")
    ap.add_argument("--seeds", type=int, default=3, help="random-init seeds (the spread)")
    ap.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()

    from vidssl.data.sample import cache_dir
    from vidssl.eval.learned import diagnostics_at_end, random_init_scores
    from vidssl.eval.sample_bench import ground_truth_dir, score_encoder, write_ground_truth
    from vidssl.hub import arch_of, load_encoder

    overrides = list(args.overrides)
    if args.video:
        overrides.append(f"data.videos=[{','.join(repr(v) for v in args.video)}]")
    truth = ground_truth_dir(cache_dir())
    write_ground_truth(truth)
    root = args.out or Path(tempfile.mkdtemp(prefix="vidssl-learning-"))
    rows = []
    for method in args.methods:
        run_dir = root / method
        t0 = time.perf_counter()
        result = train(args.preset, method, overrides, args.steps, args.minutes, run_dir)
        teacher = load_encoder(run_dir)
        rows.append({"model": f"{method} ({result['step']} steps, {time.perf_counter() - t0:.0f} s)",
                     **score_encoder(teacher, truth), **diagnostics_at_end(run_dir / "metrics.jsonl")})
    from vidssl.config import load_config

    attn_init = load_config(args.preset, overrides).model.attn_init  # random init built as the runs were
    rand = random_init_scores(*arch_of(teacher), truth, args.seeds, attn_init)
    mean, sd = rand["random_mean"], rand["random_sd"]
    print(f"\nruns in {root}; scores on {truth}")
    print(f"{'model':34s} {'J&F':>7s} {'k-NN':>7s} {'unsup':>7s} {'loss start>end':>15s} {'H(q)':>6s} "
          f"{'H(mean q)':>9s} {'KL':>6s} {'IoU':>5s}")
    for r in rows:
        print(f"{r['model']:34s} {r['J&F']:7.2f} {r['knn_top1']:7.2f} {r['unsup_mIoU']:7.2f} "
              f"{r['loss_start']:6.2f} > {r['loss_end']:6.2f} "
              f"{r['teacher_entropy']:6.2f} {r['teacher_batch_entropy']:9.2f} {r['kl']:6.2f} {r.get('mask_iou', float('nan')):5.2f}")
    print(f"{'random init (' + str(args.seeds) + ' seeds, mean ± sd)':34s} "
          f"{mean['J&F']:5.2f}±{sd['J&F']:.2f} {mean['knn_top1']:5.2f}±{sd['knn_top1']:.2f} "
          f"{mean['unsup_mIoU']:5.2f}±{sd['unsup_mIoU']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
