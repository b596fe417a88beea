"""`secat train`: features -> clusters -> pseudo-names -> self-context episodes -> the mapper,
trained on the engine's Fabric (same devices, precision, checkpoint and resume as pretraining).

A run directory holds `secat.json` (the settings, the names and every image's class, written
once at the start), `checkpoint.pt` (mapper, its initial state, optimizer, step, RNG) and
`metrics.jsonl`. The episodes of a step are a pure function of (seed, step, rank), so a resumed
run sees the episodes an uninterrupted one would have.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from vidssl.config import Config, EngineConfig, check_devices, to_dict
from vidssl.engine import checkpoint as ckpt
from vidssl.engine.schedules import CosineSchedule
from vidssl.engine.trainer import GracefulStop, make_fabric
from vidssl.errors import VidsslError
from vidssl.eval.datasets import read_image_folder
from vidssl.eval.features import FeatureCache, prepare_encoder
from vidssl.io import drop_rows_after, ensure_dir, remove_stale_temporaries, write_json
from vidssl.secat.clusters import cluster_features, encode_images, list_images
from vidssl.secat.episodes import EpisodeSampler, LayoutBuilder, collate, episode_rng
from vidssl.secat.lm import load_lm, lm_width
from vidssl.secat.mapper import FeatureMapper, caption_loss, embed_sequence, embedding_std
from vidssl.secat.names import class_name, draw_pseudo_names

FORMAT = "vidssl-secat/1"
STATE_NAME = "secat.json"
METRICS_NAME = "metrics.jsonl"


@dataclass
class SecatConfig:
    encoder: str  # anything vidssl.hub.load_encoder takes
    lm: str  # a local Hugging Face causal LM folder
    images: list[str]
    labelled: bool = False  # images are ImageFolders: their classes and real names replace clusters
    clusters: int = 16  # K
    exclude_names: list[str] = field(default_factory=list)  # the evaluation set's class names
    binding: str = "episode"  # 'episode': names re-drawn per episode; 'class': a cluster keeps its name
    image_tokens: int = 2  # m LM embeddings per image (Frozen uses 2)
    train_ways: list[int] = field(default_factory=lambda: [2, 3, 5])
    train_shots: list[int] = field(default_factory=lambda: [1, 2])
    steps: int = 300
    batch_size: int = 8  # episodes per step and process
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int = 20
    weight_decay: float = 0.01
    clip_grad: float = 1.0
    image_size: int = 224
    seed: int = 0
    checkpoint_every: int = 100
    cache_dir: str | None = None
    engine: EngineConfig = field(default_factory=EngineConfig)


def read_state(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / STATE_NAME
    if not path.is_file():
        raise VidsslError(f"{run_dir}: not a SeCAt run (no {STATE_NAME}; make one with `vidssl secat train`)")
    return json.loads(path.read_text())


def config_from_state(state: dict[str, Any]) -> SecatConfig:
    values = dict(state["config"])
    values["engine"] = EngineConfig(**values["engine"])
    return SecatConfig(**values)


def _labelled_classes(folders: list[str]) -> tuple[list[Path], list[int], list[str]]:
    """Images, class ids and real class names of ImageFolders (classes merged by name)."""
    names: list[str] = []
    paths: list[Path] = []
    classes: list[int] = []
    for folder in folders:
        data = read_image_folder(folder)
        for p, c in data.items:
            name = class_name(data.classes[c])
            if name not in names:
                names.append(name)
            paths.append(p)
            classes.append(names.index(name))
    return paths, classes, names


def _shapes(cfg: SecatConfig, sampler: EpisodeSampler) -> list[tuple[int, int]]:
    shapes = [(n, k) for n in cfg.train_ways for k in cfg.train_shots if len(sampler.eligible(k)) >= n and n >= 1]
    if not shapes:
        raise VidsslError(f"no training episode fits the classes: ways {cfg.train_ways}, shots {cfg.train_shots}, "
                          f"class sizes {sorted(len(m) for m in sampler.members.values())}")
    return shapes


def prepare_pool(cfg: SecatConfig, tokenizer: Any, vit: torch.nn.Module, weights_id: str, *,
                 say=print) -> tuple[dict[str, Any], torch.Tensor]:
    """The run's fixed part (image paths, their classes: clusters or folders, and the names) and
    the images' features."""
    cache = FeatureCache.at(cfg.cache_dir, bool(weights_id))
    if cfg.labelled:
        paths, classes, names = _labelled_classes(cfg.images)
    else:
        paths = list_images(cfg.images)
    feats = encode_images(vit, weights_id, paths, cfg.image_size, cache)
    if not cfg.labelled:
        classes = cluster_features(feats, cfg.clusters, seed=cfg.seed + 1).tolist()
        names = draw_pseudo_names(cfg.clusters, tokenizer, exclude=cfg.exclude_names, seed=cfg.seed)
        sizes = torch.bincount(torch.tensor(classes), minlength=cfg.clusters).tolist()
        say(f"k-means: {len(paths)} images into K={cfg.clusters} clusters (sizes {sorted(sizes, reverse=True)})")
    return {"paths": [str(p) for p in paths], "classes": [int(c) for c in classes], "names": names,
            "feature_dim": int(feats.shape[1])}, feats


def train_secat(cfg: SecatConfig, run_dir: str | Path, *, resume: bool = False, max_steps: int | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a SeCAt mapper into `run_dir`; returns {'step', 'loss', 'run_dir', ...}."""
    run_dir = Path(run_dir)
    if cfg.binding not in ("episode", "class"):
        raise VidsslError(f"--binding must be 'episode' or 'class', not {cfg.binding!r}")
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.image_tokens < 1:
        raise VidsslError("--steps, --batch-size and --image-tokens must be >= 1")
    check_devices(Config(engine=cfg.engine))
    ckpt_path = run_dir / ckpt.CHECKPOINT_NAME
    if resume and not ckpt_path.is_file():
        raise VidsslError(f"--resume: no checkpoint in {run_dir} (expected {ckpt_path})")
    if not resume and (ckpt_path.exists() or (run_dir / STATE_NAME).exists()):
        raise VidsslError(f"{run_dir} already holds a SeCAt run; pass --resume to continue it or choose another --out")
    lm, tokenizer = load_lm(cfg.lm)  # before the encoder: a wrong --lm fails fast
    fabric, precision = make_fabric(cfg.engine)
    zero = fabric.is_global_zero
    say = (lambda text: tqdm.write(text)) if zero else (lambda text: None)
    vit, enc_name, wid = prepare_encoder(cfg.encoder, device=fabric.device)
    feats = None
    if resume:
        state = read_state(run_dir)
        if zero:
            remove_stale_temporaries(ckpt_path)
    else:
        if zero:
            pool, feats = prepare_pool(cfg, tokenizer, vit, wid or "", say=say)
            state = {"format": FORMAT, "config": to_dict(cfg), "encoder": enc_name, **pool}
            ensure_dir(run_dir)
            write_json(run_dir / STATE_NAME, state)
        fabric.barrier()
        state = read_state(run_dir)
    if feats is None:  # other ranks, and a resumed run (from the cache when the weights have an id)
        cache = FeatureCache.at(cfg.cache_dir, bool(wid))
        feats = encode_images(vit, wid or "", [Path(p) for p in state["paths"]], cfg.image_size, cache)
    del vit
    features = fabric.to_device(feats)
    sampler = EpisodeSampler(state["classes"], state["names"], binding=cfg.binding)
    shapes = _shapes(cfg, sampler)
    builder = LayoutBuilder(tokenizer, cfg.image_tokens)

    lm = fabric.strategy.precision.convert_module(lm).to(fabric.device)
    torch.manual_seed(cfg.seed)  # the untrained mapper is this initial state, kept in the checkpoint
    mapper = FeatureMapper(state["feature_dim"], lm_width(lm), cfg.image_tokens, embedding_std(lm))
    initial = copy.deepcopy(mapper.state_dict())
    optimizer = torch.optim.AdamW(mapper.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, optimizer = fabric.setup(mapper, optimizer)
    schedule = CosineSchedule(cfg.lr, cfg.min_lr, cfg.steps, warmup_steps=min(cfg.warmup_steps, cfg.steps - 1))
    step = 0
    if resume:
        payload = ckpt.torch_load_safely(ckpt_path)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise VidsslError(f"{ckpt_path} is not a SeCAt checkpoint")
        mapper.load_state_dict(payload["mapper"])
        initial = payload["mapper_init"]
        optimizer.load_state_dict(payload["optimizer"])
        step = int(payload["step"])
        ckpt.set_rng_state(payload["rng"])  # episodes need none (episode_rng); dropout might

    def save() -> None:
        if zero:
            ckpt.save_atomic({"format": FORMAT, "mapper": mapper.state_dict(), "mapper_init": initial,
                              "optimizer": optimizer.state_dict(), "step": step, "world_size": fabric.world_size,
                              "rng": ckpt.rng_state()}, ckpt_path)
        fabric.barrier()

    if resume:
        if zero:
            drop_rows_after(run_dir / METRICS_NAME, step)
    else:
        save()  # step 0: a run killed before its first periodic checkpoint can still be resumed
    end = cfg.steps if max_steps is None else min(cfg.steps, max_steps)
    if step >= end:
        say(f"nothing to do: the run is at step {step} of {end}")
        return {"step": step, "run_dir": str(run_dir), "finished": True}
    say(f"vidssl secat train: {len(state['paths'])} images, {len(state['names'])} "
        f"{'real' if cfg.labelled else 'pseudo'}-named classes, episodes {shapes} (ways, shots), "
        f"{fabric.world_size} process(es) on {fabric.device}, precision {precision}; run dir {run_dir}")
    metrics = open(run_dir / METRICS_NAME, "a") if zero else None
    bar = tqdm(total=end, initial=step, desc="secat train", unit="step", disable=not (zero and progress), mininterval=1.0)
    loss_value, started, stopped = float("nan"), time.perf_counter(), False
    model.train()
    with GracefulStop() as stop:
        while step < end:
            lr = schedule(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            ways, shots = shapes[episode_rng(cfg.seed, step, -1).randrange(len(shapes))]
            episodes = [sampler.sample(ways, shots, episode_rng(cfg.seed, step, fabric.global_rank, i))
                        for i in range(cfg.batch_size)]
            batch = collate([builder.build(e.support_names, e.query_name) for e in episodes],
                            [len(e.images) for e in episodes], cfg.image_tokens, builder.pad_id)
            batch = {k: fabric.to_device(v) for k, v in batch.items()}
            images = torch.tensor([i for e in episodes for i in e.images], device=features.device)
            with fabric.autocast():
                embeds = embed_sequence(lm, model, batch["ids"], batch["slot"], features[images])
                logits = lm(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
                loss = caption_loss(logits, batch["labels"])
            if not torch.isfinite(loss.detach()):
                raise VidsslError(f"loss is {loss.item()} at step {step}; stopping (last checkpoint {ckpt_path})")
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            if cfg.clip_grad > 0:
                fabric.clip_gradients(model, optimizer, max_norm=cfg.clip_grad)
            optimizer.step()
            step += 1
            loss_value = loss.item()
            bar.update(1)
            bar.set_postfix({"loss": f"{loss_value:.3f}", "lr": f"{lr:.1e}", "ways": ways, "shots": shots}, refresh=False)
            if metrics:
                metrics.write(json.dumps({"step": step, "loss": loss_value, "lr": lr, "ways": ways, "shots": shots}) + "\n")
                metrics.flush()
            if step % cfg.checkpoint_every == 0:
                save()
            if stop.requested:
                stopped = True
                break
    save()
    bar.close()
    if metrics:
        metrics.close()
    wall = time.perf_counter() - started
    if stopped:
        say(f"stopped at step {step}; checkpoint saved; resume with: vidssl secat train --out {run_dir} --resume")
    return {"step": step, "loss": loss_value, "wall_time_s": wall, "run_dir": str(run_dir),
            "finished": not stopped and step >= cfg.steps, "names": state["names"]}

