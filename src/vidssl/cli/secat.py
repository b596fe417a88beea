"""`vidssl secat train|eval`: self-context adaptation of a small VLM (docs/secat.md).

train: features of unlabelled images -> k-means -> pseudo-names -> a mapper into a frozen local
LM, on the engine (devices, precision, checkpoint, resume). eval: open-ended N-way k-shot
classification with an ImageFolder's real class names; prints a table, writes JSON and an
example strip per setting.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accelerator", default="auto", help="Fabric accelerator: auto, cpu, cuda/gpu (default auto)")
    p.add_argument("--devices", default="auto", help="processes per node: a count, 'auto', or GPU indices like 0,1")
    p.add_argument("--precision", default=None,
                   help="Fabric precision (32-true, bf16-mixed, 16-mixed); default: chosen for the hardware as in pretrain")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a SeCAt mapper from unlabelled images (clusters named by pseudo-words)",
        description="Cluster unlabelled images with a frozen encoder, name the clusters with unrelated pseudo-words "
                    "and train a mapping into a frozen local causal LM on interleaved self-context episodes.")
    p.add_argument("--encoder", metavar="W", help="any weights load_encoder takes: a vidssl export, run directory, "
                   "checkpoint, or random:MODEL_NAME")
    p.add_argument("--lm", metavar="DIR", help="a local Hugging Face causal LM folder (save_pretrained layout); "
                   "nothing is downloaded")
    p.add_argument("--images", nargs="+", metavar="DIR", help="folders of unlabelled images (searched recursively)")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory to create (or continue with --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out with its own settings")
    p.add_argument("--labelled", action="store_true",
                   help="treat --images as ImageFolders and train on their real class names (the supervised reference)")
    p.add_argument("--clusters", type=int, default=16, help="K of k-means, one pseudo-name each (default 16)")
    p.add_argument("--exclude-names", nargs="+", default=[], metavar="DIR_OR_NAME",
                   help="never use these as pseudo-names: an ImageFolder (its class names) or plain names; "
                        "give the evaluation set here")
    p.add_argument("--binding", choices=("episode", "class"), default="episode",
                   help="episode: names re-drawn for every episode, readable only from the context (default); "
                        "class: each cluster keeps its own name")
    p.add_argument("--image-tokens", type=int, default=2, help="LM input embeddings per image (default 2, as Frozen)")
    p.add_argument("--ways", type=int, nargs="+", default=[2, 3, 5], help="training episode ways (default 2 3 5)")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 2], help="training episode shots (default 1 2)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps in total (the schedule still spans --steps)")
    p.add_argument("--batch-size", type=int, default=8, help="episodes per step and process (default 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the cosine schedule (default 1e-3)")
    p.add_argument("--image-size", type=int, default=224, help="encoder input size (default 224)")
    p.add_argument("--seed", type=int, default=0, help="seed of the mapper, names and episodes (default 0)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default 100)")
    p.add_argument("--cache-dir", metavar="DIR", help="feature cache root (default $VIDSSL_CACHE_DIR or ~/.cache/vidssl)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _engine_args(p)
    p.set_defaults(func=run_train)

    p = subparsers.add_parser(
        "eval", help="open-ended few-shot classification with real class names (trained vs untrained mapper)",
        description="Score a SeCAt run on N-way k-shot episodes from an ImageFolder: greedy answers, exact match "
                    "after normalisation and a name-in-output rate, for the trained mapper, its untrained initial "
                    "state and (with --labelled) a mapper trained with real names.")
    p.add_argument("--run", required=True, metavar="RUN", help="a `vidssl secat train` run directory")
    p.add_argument("--data", required=True, metavar="IMAGEFOLDER", help="evaluation images, DIR/CLASS/IMAGE")
    p.add_argument("--ways", type=int, nargs="+", default=[2, 5], help="N of N-way (default 2 5)")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5], help="k of k-shot (default 1 5)")
    p.add_argument("--episodes", type=int, default=100, help="episodes per setting (default 100)")
    p.add_argument("--labelled", metavar="IMAGEFOLDER",
                   help="also train (into RUN/real-names, same settings) and score a mapper on these labelled images "
                        "with their real names; use images other than --data")
    p.add_argument("--lm", metavar="DIR", help="the LM folder, if it moved since training")
    p.add_argument("--out", metavar="DIR", help="where the JSON and strips go (default RUN/eval)")
    p.add_argument("--seed", type=int, default=0, help="episode seed (default 0)")
    p.add_argument("--max-new-tokens", type=int, default=8, help="greedy generation length limit (default 8)")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda:0 ...")
    p.add_argument("--cache-dir", metavar="DIR", help="feature cache root")
    p.set_defaults(func=run_eval)


def _exclusions(items: list[str]) -> list[str]:
    from vidssl.eval.datasets import read_image_folder
    from vidssl.secat.names import class_name

    names: list[str] = []
    for item in items:
        if Path(item).is_dir():
            names += [class_name(c) for c in read_image_folder(item).classes]
        else:
            names.append(class_name(item))
    return names


def run_train(args: argparse.Namespace) -> int:
    from vidssl.config import EngineConfig
    from vidssl.errors import VidsslError
    from vidssl.secat.train import SecatConfig, config_from_state, read_state, train_secat

    if args.resume:
        cfg = config_from_state(read_state(args.out))
    else:
        missing = [o for o, v in (("--encoder", args.encoder), ("--lm", args.lm), ("--images", args.images)) if not v]
        if missing:
            raise VidsslError(f"secat train needs {', '.join(missing)} (or --resume with an existing --out)")
        devices = int(args.devices) if str(args.devices).isdigit() else args.devices
        cfg = SecatConfig(
            encoder=args.encoder, lm=args.lm, images=list(args.images), labelled=args.labelled, clusters=args.clusters,
            exclude_names=_exclusions(args.exclude_names), binding=args.binding, image_tokens=args.image_tokens,
            train_ways=list(args.ways), train_shots=list(args.shots), steps=args.steps, batch_size=args.batch_size,
            lr=args.lr, image_size=args.image_size, seed=args.seed, checkpoint_every=args.checkpoint_every,
            cache_dir=args.cache_dir,
            engine=EngineConfig(accelerator=args.accelerator, devices=devices, precision=args.precision),
        )
    result = train_secat(cfg, args.out, resume=args.resume, max_steps=args.max_steps, progress=not args.no_progress)
    if "loss" in result:
        print(f"done: step {result['step']}/{cfg.steps}, final loss {result['loss']:.4f}, "
              f"{result['wall_time_s']:.1f} s, run dir {args.out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from vidssl.eval.report import one_line_warnings
    from vidssl.io import write_json
    from vidssl.secat.evaluate import evaluate_secat, table
    from vidssl.secat.train import config_from_state, read_state, train_secat
    from vidssl.viz.secat_strip import save_secat_strip

    out = Path(args.out) if args.out else Path(args.run) / "eval"
    extra = {}
    with one_line_warnings():
        if args.labelled:
            base = config_from_state(read_state(args.run))
            real_dir = Path(args.run) / "real-names"
            real = base.__class__(**{**base.__dict__, "images": [args.labelled], "labelled": True, "exclude_names": [],
                                         "binding": "class"})
            resume = (real_dir / "checkpoint.pt").is_file()
            train_secat(real, real_dir, resume=resume, progress=True)
            extra["real-names"] = real_dir
        result = evaluate_secat(args.run, args.data, ways=args.ways, shots=args.shots, episodes=args.episodes,
                                extra_runs=extra, lm=args.lm, seed=args.seed, device=args.device,
                                max_new_tokens=args.max_new_tokens, cache_dir=args.cache_dir)
    write_json(out / "secat_eval.json", result)
    for example in result["examples"]:
        name = example["setting"].replace(" ", "_").replace("-", "")
        save_secat_strip(out / f"strip_{name}.png", example)
    print(f"open-ended few-shot accuracy % (name in output %), {args.episodes} episodes per setting, "
          f"{len(result['classes'])} classes; chance = 100/N")
    print(table(result["results"]))
    print(f"wrote {out / 'secat_eval.json'} and {len(result['examples'])} example strip(s) in {out}")
    return 0
