"""Where the views cost: the two view paths of `aug.device` for one recipe, without a model.

For a batch of random uint8 clips (default: the DoRA recipe of the README, T=8 frames of
512x910, 6 locals of 112; `--method dino` for DINO on frames), prints per clip:
  - loader path (`aug.device=loader`): the whole views in one loader core (`ClipViews.__call__`);
  - loader stage (`aug.device=accelerator`, in the loader): DoRA's pre-crop, or nothing but the
    clip itself for DINO and TimeT (`LoaderStage`);
  - device stage (`aug.device=accelerator`, in the step): the rest for the batch on --device
    (`ClipViews.on_device`, synchronised), split into the CPU draws and the ops;
and the clips/s each allows: loader figures per core, device figures per device. One thread, so
the CPU figures are per core. On the CPU the device stage is the same code as the loader path,
so it costs the same; on a GPU it is the figure to read.

    python benchmarks/device_views.py                        # CPU, DoRA, batch 8
    python benchmarks/device_views.py --device cuda --batch 32
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vidssl.config import load_config
from vidssl.data.training import collate, run_transform
from vidssl.data.transforms import LoaderStage


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="dora", choices=["dora", "dino", "timet"])
    p.add_argument("--device", default="cpu", help="where the device stage runs (cpu, cuda)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", default="512x910", help="decoded frame size HxW (default 512x910: the store's)")
    p.add_argument("--reps", type=int, default=3, help="timed batches (after one warm-up)")
    args = p.parse_args()
    torch.set_num_threads(1)

    preset = {"dora": "dora-vits16-wtours", "dino": "dino-vits16-wtours", "timet": "timet-vits16"}[args.method]
    overrides = ["aug.local_crops_number=6", "aug.local_crop_size=112"] if args.method == "dora" else []
    cfg = load_config(preset, overrides)
    from vidssl.methods import build_method

    cfg.model.arch, cfg.model.out_dim = "vit_tiny", 16  # the method is built only for its views
    views = build_method(cfg).make_transform()
    h, w = (int(v) for v in args.size.split("x"))
    g = torch.Generator().manual_seed(0)
    clips = [torch.randint(0, 256, (args.frames, h, w, 3), dtype=torch.uint8, generator=g) for _ in range(args.batch)]
    device = torch.device(args.device)

    loader_s, stage_s, draw_s, ops_s = [], [], [], []
    for rep in range(args.reps + 1):
        seeds = [1000 * rep + i for i in range(args.batch)]
        t = time.perf_counter()
        for c, s in zip(clips, seeds):
            run_transform(views, c, s)
        loader = (time.perf_counter() - t) / args.batch
        t = time.perf_counter()
        staged = collate([run_transform(LoaderStage(views), c, s) for c, s in zip(clips, seeds)], "bench")
        stage = (time.perf_counter() - t) / args.batch
        x = staged[0].to(device)
        sync(device)
        t = time.perf_counter()
        draws = []
        with torch.random.fork_rng(devices=[]):
            for state in staged[1]:
                torch.set_rng_state(state.clone())
                draws.append(views.draw(x.shape[1:]))
        t_draw = time.perf_counter()
        with torch.no_grad():
            out = views.apply(x, draws)
        sync(device)
        t_ops = time.perf_counter()
        if rep:  # the first batch warms up caches and kernels
            loader_s.append(loader)
            stage_s.append(stage)
            draw_s.append((t_draw - t) / args.batch)
            ops_s.append((t_ops - t_draw) / args.batch)

    med = statistics.median
    print(f"{args.method}: {args.batch} clips of {args.frames}x{h}x{w}, views {[tuple(v.shape[2:]) for v in out][:2]}..., "
          f"{len(out)} views; device stage on {device}")
    print(f"  loader path (whole views in the loader): {1e3 * med(loader_s):.1f} ms/clip -> {1 / med(loader_s):.1f} clips/s per core")
    print(f"  loader stage (aug.device=accelerator):   {1e3 * med(stage_s):.2f} ms/clip -> {1 / med(stage_s):.0f} clips/s per core "
          "(decode not included)")
    dev = med(draw_s) + med(ops_s)
    print(f"  device stage: {1e3 * dev:.1f} ms/clip ({1e3 * med(draw_s):.1f} draws on the host, {1e3 * med(ops_s):.1f} ops) "
          f"-> {1 / dev:.1f} clips/s on {device}")


if __name__ == "__main__":
    main()
