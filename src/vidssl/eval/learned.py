"""The "what it learned" block printed at the end of `vidssl pretrain`, and its JSON (`learned.json`).

Numbers come from the run's own files: the loss and diagnostics from `metrics.jsonl` (the mean of
the last tenth of the logged steps), the teacher from `checkpoint.pt`; on the built-in sample the
teacher and random init of the same architecture are scored on the sample's held-out ground truth.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from vidssl.io import read_jsonl, write_json

LEARNED_NAME = "learned.json"
DIAGNOSTICS = ("teacher_entropy", "teacher_batch_entropy", "kl", "center_norm", "mask_iou", "plan_distance")


def diagnostics_at_end(metrics: Path) -> dict[str, float]:
    """Loss at the first logged step and, for the last tenth of the logged steps, the mean loss and diagnostics."""
    rows = read_jsonl(metrics)
    tail = rows[-max(1, len(rows) // 10):]
    out = {"loss_start": rows[0]["loss"], "loss_end": statistics.fmean(r["loss"] for r in tail), "steps": rows[-1]["step"]}
    for key in DIAGNOSTICS + tuple(k for k in tail[0] if k.startswith("attn_entropy_h")):
        if key in tail[0]:
            out[key] = statistics.fmean(r[key] for r in tail)
    return out


def random_init_scores(arch: str, patch: int, truth: Path, seeds: int = 3, attn_init: str = "timm") -> dict[str, Any]:
    """Sample scores of random init of one architecture, initialised as the run was
    (`model.attn_init`): mean and spread over `seeds` seeds."""
    from vidssl.eval.sample_bench import score_encoder
    from vidssl.hub import load_encoder

    name = f"random:{arch}_patch{patch}_224"
    rand = [score_encoder(load_encoder(name, seed=s, attn_init=attn_init), truth) for s in range(seeds)]
    return {
        "random_mean": {k: statistics.fmean(r[k] for r in rand) for k in rand[0]},
        "random_sd": {k: statistics.pstdev(r[k] for r in rand) for k in rand[0]},
        "random_seeds": seeds,
    }


def score_against_random(run_dir: Path, truth: Path, seeds: int = 3, attn_init: str = "timm") -> dict[str, Any]:
    """The teacher's sample scores and random init's mean and spread over `seeds` seeds."""
    from vidssl.eval.sample_bench import score_encoder
    from vidssl.hub import arch_of, load_encoder

    teacher = load_encoder(run_dir)
    return {"trained": score_encoder(teacher, truth), **random_init_scores(*arch_of(teacher), truth, seeds, attn_init)}


def learned_report(
    run_dir: Path, out_dim: int, truth: Path | None = None, seeds: int = 3, attn_init: str = "timm"
) -> tuple[str, dict[str, Any]]:
    """(printable block, its numbers); also writes them to run_dir/learned.json.
    out_dim and attn_init are the run's `model.out_dim` and `model.attn_init`."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    d = diagnostics_at_end(metrics)
    log_k = math.log(out_dim)
    lines = [
        f"what it learned ({run_dir}):",
        f"  loss {d['loss_start']:.3f} at the first step -> {d['loss_end']:.3f} over the last steps (uniform: log K = {log_k:.2f})",
        f"  teacher entropy per sample {d['teacher_entropy']:.2f} ({d['teacher_entropy'] / log_k:.2f} x log K), "
        f"of the batch mean {d['teacher_batch_entropy']:.2f}; student-teacher KL {d['kl']:.3f}",
    ]
    heads = [d[k] for k in sorted(k for k in d if k.startswith("attn_entropy_h"))]
    if heads:
        lines.append(f"  [CLS] attention entropy per head {', '.join(f'{h:.2f}' for h in heads)}")
    if "mask_iou" in d:
        lines.append(f"  objects: mean pairwise mask IoU {d['mask_iou']:.2f}, Sinkhorn plan {d['plan_distance']:.2f} from uniform")
    result: dict[str, Any] = {"diagnostics": d, "metrics": str(metrics)}
    if truth is not None:
        s = score_against_random(run_dir, truth, seeds, attn_init)
        result["sample_scores"] = s
        init = ", mimetic q/k init" if attn_init == "mimetic" else ""
        for key, name in (("J&F", "label propagation J&F"), ("knn_top1", "k-NN top-1 by object"),
                          ("unsup_mIoU", "k-means segmentation mIoU")):
            lines.append(f"  {name}: trained {s['trained'][key]:.2f} vs random init {s['random_mean'][key]:.2f} "
                         f"± {s['random_sd'][key]:.2f} ({seeds} seed{'s' if seeds != 1 else ''}{init})")
    pictures = sorted(str(p) for p in (run_dir / "tracks").glob("*.png")) if (run_dir / "tracks").is_dir() else []
    if (run_dir / "loss.png").is_file():
        pictures.insert(0, str(run_dir / "loss.png"))
    result["pictures"] = pictures
    if pictures:
        shown = pictures if len(pictures) <= 2 else [pictures[0], pictures[-1]]  # the loss curve, the last tracks
        lines.append(f"  pictures: {', '.join(shown)}")
    write_json(run_dir / LEARNED_NAME, result, indent=1)
    lines.append(f"  all numbers: {run_dir / LEARNED_NAME}")
    return "\n".join(lines), result
