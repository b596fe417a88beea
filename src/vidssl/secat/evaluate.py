"""`secat eval`: open-ended few-shot classification with an ImageFolder's real class names.

An episode shows N classes with k images each, captioned "This is a <class name>.", then a
query image and " This is a"; the LM continues greedily and the text before the first '.' is
the answer. Accuracy is an exact match after `normalize_name`; "name in output" counts answers
that contain the right name as whole words. Every mapper (SeCAt-trained, its untrained initial
state, and any extra run such as one trained with real names) is scored on the same episodes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
from tqdm import tqdm

from vidssl.errors import VidsslError
from vidssl.eval.datasets import read_image_folder
from vidssl.eval.features import FeatureCache, prepare_encoder, resolve_device
from vidssl.eval.report import clean, warn
from vidssl.engine import checkpoint as ckpt
from vidssl.secat.clusters import encode_images
from vidssl.secat.episodes import Episode, EpisodeSampler, LayoutBuilder, episode_rng
from vidssl.secat.lm import load_lm, lm_width
from vidssl.secat.mapper import FeatureMapper, embed_sequence, greedy_generate
from vidssl.secat.names import class_name, normalize_name
from vidssl.secat.train import FORMAT, config_from_state, read_state

Generator = Callable[[Episode], str]


def is_correct(answer: str, name: str) -> bool:
    return normalize_name(answer) == normalize_name(name)


def name_in(answer: str, name: str) -> bool:
    return re.search(rf"(^| ){re.escape(normalize_name(name))}( |$)", normalize_name(answer)) is not None


def score_episodes(episodes: Sequence[Episode], generate: Generator, desc: str = "") -> dict[str, Any]:
    """{'accuracy': %, 'name_in_output': %, 'n'} of `generate` (an episode -> the answer text)."""
    answers = [generate(e) for e in tqdm(episodes, desc=desc or "episodes", disable=None, leave=False)]
    n = max(len(episodes), 1)
    return {"accuracy": 100.0 * sum(is_correct(a, e.query_name) for a, e in zip(answers, episodes)) / n,
            "name_in_output": 100.0 * sum(name_in(a, e.query_name) for a, e in zip(answers, episodes)) / n,
            "n": len(episodes), "answers": answers}


def sample_episodes(classes: Sequence[int], names: Sequence[str], ways: int, shots: int, count: int,
                    seed: int = 0) -> list[Episode]:
    """`count` episodes whose captions use each class's real name (seeded per (ways, shots, index))."""
    sampler = EpisodeSampler(classes, names, binding="class")
    return [sampler.sample(ways, shots, episode_rng(seed, ways, shots, i)) for i in range(count)]


@dataclass
class LoadedRun:
    state: dict[str, Any]
    mappers: dict[str, nn.Module]  # 'trained' and 'untrained'


def load_mappers(run_dir: str | Path, lm_dim: int) -> LoadedRun:
    state = read_state(run_dir)
    cfg = config_from_state(state)
    payload = ckpt.torch_load_safely(Path(run_dir) / ckpt.CHECKPOINT_NAME)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise VidsslError(f"{run_dir}: no SeCAt checkpoint ({ckpt.CHECKPOINT_NAME})")
    out = {}
    for key, weights in (("trained", payload["mapper"]), ("untrained", payload["mapper_init"])):
        mapper = FeatureMapper(state["feature_dim"], lm_dim, cfg.image_tokens)
        mapper.load_state_dict(weights)
        out[key] = mapper.eval()
    state["step"] = int(payload["step"])
    return LoadedRun(state, out)


def mapper_generator(lm: nn.Module, tokenizer: Any, mapper: nn.Module, features: torch.Tensor,
                     max_new_tokens: int = 8) -> Generator:
    """Greedy answers of LM + mapper for episodes over the rows of `features` (on the LM's device)."""
    builder = LayoutBuilder(tokenizer, mapper.image_tokens)
    device = features.device
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()

    def generate(e: Episode) -> str:
        layout = builder.build(e.support_names, None)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            embeds = embed_sequence(lm, mapper, layout.ids[None].to(device), layout.slot[None].to(device),
                                    features[list(e.images)])
            return greedy_generate(lm, tokenizer, embeds, max_new_tokens)

    return generate


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Mappers as rows, N-way k-shot settings as columns: 'accuracy (name in output)' in %."""
    settings = list(next(iter(results.values())).keys())
    width = max(len(m) for m in results) + 2
    lines = [" " * width + "".join(f"{s:>18}" for s in settings)]
    for mapper, row in results.items():
        lines.append(f"{mapper:<{width}}" + "".join(f"{row[s]['accuracy']:>9.1f} ({row[s]['name_in_output']:5.1f})"
                                                    for s in settings))
    return "\n".join(lines)


def evaluate_secat(
    run: str | Path, data: str | Path, *, ways: Sequence[int] = (2, 5), shots: Sequence[int] = (1, 5),
    episodes: int = 100, extra_runs: dict[str, str | Path] | None = None, lm: str | Path | None = None,
    seed: int = 0, device: str | None = None, max_new_tokens: int = 8, cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Scores of the run's trained and untrained mappers (and each of `extra_runs`, named by key) on
    `episodes` open-ended episodes per (ways, shots) from the ImageFolder `data`. Returns the JSON
    dict; its 'examples' hold one episode per setting with every mapper's answer."""
    if episodes < 1 or not ways or not shots:
        raise VidsslError("--episodes must be >= 1 and --ways/--shots non-empty")
    state = read_state(run)
    cfg = config_from_state(state)
    folder = read_image_folder(data)
    names = [class_name(c) for c in folder.classes]
    clash = sorted(set(names) & set(state["names"])) if not cfg.labelled else []
    if clash:
        warn(f"evaluation class names used as pseudo-names in {run}: {clash} (train with --exclude-names {data})")
    dev = resolve_device(device or "auto")
    model, tokenizer = load_lm(lm or cfg.lm)
    model.to(dev)
    runs = {"secat": load_mappers(run, lm_width(model))}
    for key, path in (extra_runs or {}).items():
        other = load_mappers(path, lm_width(model))
        ocfg = config_from_state(other.state)
        if (ocfg.encoder, other.state["feature_dim"]) != (cfg.encoder, state["feature_dim"]):
            raise VidsslError(f"{path}: trained on encoder {ocfg.encoder}, not {cfg.encoder} as {run}")
        runs[key] = other
    mappers = {"secat": runs["secat"].mappers["trained"], "untrained": runs["secat"].mappers["untrained"]}
    mappers.update({key: r.mappers["trained"] for key, r in runs.items() if key != "secat"})
    vit, _, wid = prepare_encoder(cfg.encoder, device=dev)
    feats = encode_images(vit, wid or "", folder.paths, cfg.image_size, FeatureCache.at(cache_dir, bool(wid)),
                          desc="eval features").to(dev)
    del vit
    labels = folder.labels.tolist()
    results: dict[str, dict[str, dict[str, float]]] = {m: {} for m in mappers}
    examples = []
    for n in ways:
        for k in shots:
            setting = f"{n}-way {k}-shot"
            eps = sample_episodes(labels, names, n, k, episodes, seed)
            answers = {}
            for key, mapper in mappers.items():
                score = score_episodes(eps, mapper_generator(model, tokenizer, mapper.to(dev), feats, max_new_tokens),
                                       desc=f"{key} {setting}")
                answers[key] = score.pop("answers")[0]
                results[key][setting] = score
            e = eps[0]
            examples.append({"setting": setting, "support": [str(folder.paths[i]) for i in e.support],
                             "support_names": list(e.support_names), "query": str(folder.paths[e.query]),
                             "query_name": e.query_name, "answers": answers,
                             "correct": {key: is_correct(a, e.query_name) for key, a in answers.items()}})
    chance = {f"{n}-way {k}-shot": 100.0 / n for n in ways for k in shots}
    return clean({"eval": "secat", "run": str(run), "data": str(data), "lm": str(lm or cfg.lm), "encoder": cfg.encoder,
                  "steps_trained": runs["secat"].state["step"], "episodes": episodes, "classes": names,
                  "chance": chance, "results": results, "examples": examples,
                  "extra_runs": {k: str(v) for k, v in (extra_runs or {}).items()}})
