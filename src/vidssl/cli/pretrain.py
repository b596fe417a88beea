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
            "  vidssl pretrain --out runs/venice --resume\n"
            "  vidssl pretrain timet-vits16 --init dino_vits16.pth --frames ytvos/JPEGImages/*"
        ),
    )
    p.add_argument(
        "args", nargs="*", metavar="[PRESET_OR_YAML] [key=value ...]",
        help=f"a preset name or YAML file (default: '{DEFAULT_PRESET}'), then dotted overrides such as optim.lr=1e-3",
    )
    p.add_argument("--video", nargs="+", action="extend", metavar="PATH",
                   help="video file(s) to train on (anything FFmpeg reads); repeat the flag or list several")
    p.add_argument("--store", metavar="STORE", help="a frame store written by `vidssl ingest` (faster than --video)")
    p.add_argument("--frames", nargs="+", action="extend", metavar="DIR",
                   help="folder(s) of JPEG frames, one per video (DAVIS / YouTube-VOS JPEGImages layout)")
    p.add_argument("--init", metavar="W",
                   help="TimeT: the encoder to time-tune, anything `vidssl eval --weights` accepts (sets model.arch)")
    p.add_argument("--val-davis", metavar="DIR",
                   help="every --val-every epochs, the teacher's clip- and frame-wise unsupervised segmentation mIoU "
                        "on this DAVIS-2017 folder (val split): validation_davis.jsonl/.png, the best teacher kept as "
                        "best_davis_encoder.safetensors")
    p.add_argument("--val-voc", metavar="DIR", help="the same on a Pascal VOC folder (val split; frame- and dataset-wise)")
    p.add_argument("--val-every", type=int, default=1, metavar="N", help="epochs between validations (default 1)")
    p.add_argument("--val-size", type=int, default=224, metavar="PX",
                   help="validation images are resized to PX (default 224) and scored at PX/2")
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
    frame_dirs, extra_after_frames = split_videos(args.frames or [])
    preset, overrides = split_preset(list(args.args) + extra + extra_after_frames)
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
    if frame_dirs:
        cfg.data.videos = [*cfg.data.videos, *(str(d) for d in check_frame_folders(frame_dirs))]
    if args.init:
        if args.resume:
            raise ConfigError("--init starts a run; a resumed run keeps the weights of its checkpoint")
        prepare_init(cfg, args.init, out)
    validate(cfg)
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {args.steps}")
    validation = validation_callbacks(args)
    # heavy (torch, Lightning): after the config is known to be good
    from vidssl.engine.trainer import pretrain
    from vidssl.viz.callbacks import training_pictures

    result = pretrain(cfg, out, resume=args.resume, max_steps=args.steps, callbacks=training_pictures(cfg) + validation)
    if result.get("signal"):
        return 128 + result["signal"]  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    if result.get("finished"):
        print_what_it_learned(cfg, out)
    return 0


INIT_NAME = "init_encoder.safetensors"  # --init's weights, exported into the run dir (a resume reloads them)


def check_frame_folders(folders: list[str]) -> list[Path]:
    bad = [f for f in folders if not Path(f).is_dir()]
    if bad:
        raise ConfigError(f"--frames {bad[0]}: not a folder (give one folder of JPEG frames per video)")
    return [Path(f) for f in folders]


def validation_callbacks(args) -> list:
    """--val-davis / --val-voc as callbacks, after a check that the folders are datasets (before training)."""
    if args.val_every < 1 or args.val_size < 2:
        raise ConfigError(f"--val-every must be at least 1 and --val-size at least 2, got {args.val_every}, {args.val_size}")
    if not (args.val_davis or args.val_voc):
        return []
    from vidssl.eval.seg_data import read_davis_samples, read_voc
    from vidssl.viz.validation import SegmentationValidation

    callbacks = []
    for folder, layout, read in ((args.val_davis, "davis", read_davis_samples), (args.val_voc, "voc", read_voc)):
        if folder:
            read(folder, "val")  # a one-line error now, not after the first epoch
            callbacks.append(SegmentationValidation(folder, layout, args.val_every, args.val_size,
                                                     args.val_size // 2))
    return callbacks


def prepare_init(cfg, weights: str, out: Path) -> None:
    """Load --init with the one weights loader, export it into the run dir and point
    model.init_weights at it; the model's arch and patch size follow the weights."""
    from vidssl.engine.checkpoint import CHECKPOINT_NAME
    from vidssl.hub import arch_of, export_encoder, load_encoder

    if cfg.method.name != "timet":
        raise ConfigError(f"--init is for method timet (time-tuning a pretrained encoder); this run is {cfg.method.name}")
    if weights.startswith("random:"):
        print("warning: --init random:...: TimeT assumes a pretrained start (DINO, DoRA); "
              "from random weights it tunes only the last blocks of an untrained encoder", flush=True)
    if (out / CHECKPOINT_NAME).exists():
        return  # the trainer refuses to start over an existing run, with its own message
    encoder = load_encoder(weights)
    arch, patch = arch_of(encoder)
    if (arch, patch) != (cfg.model.arch, cfg.model.patch_size):
        print(f"--init: model.arch={arch}, model.patch_size={patch} (from the weights; the preset says "
              f"{cfg.model.arch}/{cfg.model.patch_size})", flush=True)
        cfg.model.arch, cfg.model.patch_size = arch, patch
    from vidssl.io import ensure_dir

    ensure_dir(out)
    cfg.model.init_weights = str(export_encoder(encoder, out / INIT_NAME).resolve())


def print_what_it_learned(cfg, run_dir: Path) -> None:
    """Diagnostics at the end of every run; on the built-in sample also the teacher's scores against
    random init on the sample's held-out ground truth (about two minutes on 2 cores)."""
    from vidssl.eval.learned import learned_report

    if cfg.method.name == "timet":  # no DINO head to diagnose: the loss and the pseudo-labels in use
        print(timet_summary(run_dir))
        return
    truth = None
    if not cfg.data.videos and not cfg.data.store:
        from vidssl.data.sample import cache_dir
        from vidssl.eval.sample_bench import ground_truth_dir, write_ground_truth

        truth = ground_truth_dir(cache_dir())
        print("scoring the teacher against random init on the sample's held-out ground truth ...", flush=True)
        write_ground_truth(truth)
    print(learned_report(run_dir, cfg.model.out_dim, truth, attn_init=cfg.model.attn_init)[0])


def timet_summary(run_dir: Path) -> str:
    """First and last logged loss, prototypes in use as pseudo-labels and student agreement."""
    from vidssl.engine.run_log import METRICS_NAME
    from vidssl.io import read_jsonl

    path = run_dir / METRICS_NAME
    rows = read_jsonl(path) if path.is_file() else []
    if not rows:
        return f"TimeT: no metrics logged in {path}"
    first, last = rows[0], rows[-1]
    return (f"TimeT: loss {first['loss']:.4f} (step {first['step']}) -> {last['loss']:.4f} (step {last['step']}); "
            f"prototypes used as pseudo-labels in the last batch: {last.get('clusters_used', 0):.0f}; "
            f"student agrees with them on {100 * last.get('agreement', 0):.1f}% of the patches")
