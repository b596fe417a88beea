"""`vidssl pretrain`: train an encoder on one or more long videos (or a frame store)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vidssl.config import RUN_CONFIG_NAME, ConfigError, list_presets, load_config, valid_keys, validate

DEFAULT_PRESET = "default"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="self-supervised pretraining (DoRA or DINO) on long videos",
        description=(
            "Train a ViT self-supervised on videos. With no arguments, trains a tiny model on a small "
            "built-in sample video on the CPU in a few minutes. Presets: " + ", ".join(list_presets())
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  vidssl pretrain\n"
            "  vidssl pretrain dora-vits16-wtours --video venice.mp4 --out runs/venice\n"
            "  vidssl pretrain --store stores/venice optim.epochs=10 data.batch_size=32\n"
            "  vidssl pretrain --out runs/venice --resume"
        ),
    )
    p.add_argument(
        "args", nargs="*", metavar="[PRESET_OR_YAML] [key=value ...]",
        help=f"a preset name or YAML file (default: '{DEFAULT_PRESET}'), then dotted overrides such as optim.lr=1e-3",
    )
    p.add_argument("--video", nargs="+", action="extend", metavar="PATH",
                   help="video file(s) to train on (anything FFmpeg reads); repeat the flag or list several")
    p.add_argument("--store", metavar="STORE", help="a frame store written by `vidssl ingest` (faster than --video)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/<preset>-<time>); with --resume, the run to continue")
    p.add_argument("--steps", type=int, metavar="N", help="stop after N optimizer steps in total (schedules still span the full run)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.set_defaults(func=run)


def split_preset(args: list[str]) -> tuple[str | None, list[str]]:
    """The first argument without '=' is the preset; the rest are overrides."""
    preset, overrides = None, []
    for a in args:
        if "=" not in a and preset is None and not overrides:
            preset = a
        elif "=" not in a:
            raise ConfigError(f"unexpected argument '{a}': give one preset first, then key=value overrides")
        else:
            overrides.append(a)
    return preset, overrides


def split_videos(items: list[str]) -> tuple[list[str], list[str]]:
    """`--video a.mp4 b.mp4 optim.lr=1` reads the trailing overrides as overrides, not videos."""
    keys = set(valid_keys())
    videos, overrides = [], []
    for item in items:
        (overrides if item.split("=", 1)[0] in keys else videos).append(item)
    return videos, overrides


def run(args: argparse.Namespace) -> int:
    videos, extra = split_videos(args.video or [])
    preset, overrides = split_preset(list(args.args) + extra)
    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out DIR, the run directory to continue")
        saved = Path(args.out) / RUN_CONFIG_NAME
        if preset is not None:
            raise ConfigError("--resume continues the run with its saved config; give overrides only, not a preset")
        if not saved.is_file():
            raise ConfigError(f"--resume: no run in {args.out} (missing {saved})")
        cfg = load_config(str(saved), overrides)
        out = Path(args.out)
    else:
        cfg = load_config(preset or DEFAULT_PRESET, overrides)
        name = Path(preset).stem if preset else DEFAULT_PRESET
        out = Path(args.out) if args.out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    # Paths are taken as given: never through the override parser (backslashes, quotes).
    if videos:
        cfg.data.videos = [str(v) for v in videos]
    if args.store:
        cfg.data.store = str(args.store)
    validate(cfg)
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {args.steps}")
    # heavy (torch, Lightning): after the config is known to be good
    from vidssl.engine.trainer import pretrain
    from vidssl.viz.callbacks import training_pictures

    result = pretrain(cfg, out, resume=args.resume, max_steps=args.steps, callbacks=training_pictures(cfg))
    if result.get("signal"):
        return 128 + result["signal"]  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    if result.get("finished"):
        print_what_it_learned(cfg, out)
    return 0


def print_what_it_learned(cfg, run_dir: Path) -> None:
    """Diagnostics at the end of every run; on the built-in sample also the teacher's scores against
    random init on the sample's held-out ground truth (about a minute on 2 cores)."""
    from vidssl.eval.learned import learned_report

    truth = None
    if not cfg.data.videos and not cfg.data.store:
        from vidssl.data.sample import cache_dir
        from vidssl.eval.sample_bench import ground_truth_dir, write_ground_truth

        truth = ground_truth_dir(cache_dir())
        print("scoring the teacher against random init on the sample's held-out ground truth ...", flush=True)
        write_ground_truth(truth)
    print(learned_report(run_dir, cfg.model.out_dim, truth)[0])


