"""`secat train` and `secat eval` end to end on the CPU: a tiny LM folder built from a config, a
random ViT and generated colour images. Training lowers the caption loss, resumes exactly, and the
CLI writes a table, JSON and readable strips; bad input is one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from test_secat_fixtures import CLASS_COLOURS, write_colour_folder, write_tiny_lm
from vidssl.cli.main import main
from vidssl.config import EngineConfig
from vidssl.secat.names import class_name

transformers = pytest.importorskip("transformers")

ENCODER = "random:vit_tiny_patch16_224"
EVAL_NAMES = [class_name(c) for c in CLASS_COLOURS]
CPU = ["--accelerator", "cpu", "--devices", "1", "--precision", "32-true"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("secat")
    return {"root": root, "lm": write_tiny_lm(root / "lm"), "images": write_colour_folder(root / "pool", 6, seed=0),
            "eval": write_colour_folder(root / "eval", 4, seed=1), "labelled": write_colour_folder(root / "lab", 4, seed=2),
            "cache": root / "cache"}


def config(world: dict[str, Path], **overrides):
    from vidssl.secat.train import SecatConfig

    values = dict(encoder=ENCODER, lm=str(world["lm"]), images=[str(world["images"])], clusters=6,
                  exclude_names=EVAL_NAMES, steps=30, batch_size=8, lr=1e-2, warmup_steps=2, image_size=32,
                  checkpoint_every=10, cache_dir=str(world["cache"]),
                  engine=EngineConfig(accelerator="cpu", devices=1, precision="32-true"))
    return SecatConfig(**{**values, **overrides})


def held_out_loss(world: dict[str, Path], run: Path, key: str) -> float:
    """Caption loss of the run's 'mapper' or 'mapper_init' on 16 fixed episodes it never trained on."""
    from vidssl.engine.checkpoint import torch_load_safely
    from vidssl.eval.features import FeatureCache, prepare_encoder
    from vidssl.secat.clusters import encode_images
    from vidssl.secat.episodes import EpisodeSampler, LayoutBuilder, collate, episode_rng
    from vidssl.secat.lm import load_lm
    from vidssl.secat.mapper import FeatureMapper, caption_loss, embed_sequence

    state = json.loads((run / "secat.json").read_text())
    lm, tok = load_lm(world["lm"])
    vit, _, wid = prepare_encoder(ENCODER, device="cpu")
    feats = encode_images(vit, wid, [Path(p) for p in state["paths"]], 32, FeatureCache.at(world["cache"]))
    mapper = FeatureMapper(state["feature_dim"], 64, 2)
    mapper.load_state_dict(torch_load_safely(run / "checkpoint.pt")[key])
    sampler = EpisodeSampler(state["classes"], state["names"], binding="episode")
    episodes = [sampler.sample(3, 1, episode_rng(1234, i)) for i in range(16)]
    builder = LayoutBuilder(tok, 2)
    batch = collate([builder.build(e.support_names, e.query_name) for e in episodes], [4] * 16, 2, builder.pad_id)
    images = torch.tensor([i for e in episodes for i in e.images])
    with torch.no_grad():
        embeds = embed_sequence(lm, mapper, batch["ids"], batch["slot"], feats[images])
        logits = lm(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
    return float(caption_loss(logits, batch["labels"]))


def test_training_names_clusters_lowers_the_loss_and_resumes_exactly(world: dict[str, Path]) -> None:
    from vidssl.engine.checkpoint import torch_load_safely
    from vidssl.secat.train import train_secat

    whole = world["root"] / "whole"
    result = train_secat(config(world), whole, progress=False)
    state = json.loads((whole / "secat.json").read_text())
    assert result["finished"] and result["step"] == 30
    # K pseudo-names, one per cluster, none an evaluation class name nor a word of one
    assert len(state["names"]) == len(set(state["names"])) == 6
    assert not set(state["names"]) & (set(EVAL_NAMES) | {w for n in EVAL_NAMES for w in n.split()})
    assert sorted(set(state["classes"])) == list(range(6)) and len(state["classes"]) == 36
    before, after = held_out_loss(world, whole, "mapper_init"), held_out_loss(world, whole, "mapper")
    assert after < before - 0.5, (before, after)

    # interrupted at step 12 (the checkpoint of step 10 plus the final save), with metric rows written
    # after the checkpoint as a killed run leaves them, then resumed: the same mapper as uninterrupted
    split = world["root"] / "split"
    assert train_secat(config(world), split, max_steps=12, progress=False)["step"] == 12
    with open(split / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 13, "loss": 9.0}) + "\n")
    resumed = train_secat(config(world), split, resume=True, progress=False)
    assert resumed["step"] == 30 and resumed["finished"]
    a, b = torch_load_safely(whole / "checkpoint.pt"), torch_load_safely(split / "checkpoint.pt")
    for name, value in a["mapper"].items():
        torch.testing.assert_close(b["mapper"][name], value, rtol=1e-5, atol=1e-6)
    steps = [json.loads(line)["step"] for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31))


def test_cli_train_then_eval_writes_table_json_and_strips(world: dict[str, Path], capsys) -> None:
    run = world["root"] / "cli-run"
    common = ["--cache-dir", str(world["cache"])]
    assert main(["secat", "train", "--encoder", ENCODER, "--lm", str(world["lm"]), "--images", str(world["images"]),
                 "--out", str(run), "--clusters", "6", "--exclude-names", str(world["eval"]), "--steps", "12",
                 "--batch-size", "4", "--image-size", "32", "--no-progress", *CPU, *common]) == 0
    assert "done: step 12/12" in capsys.readouterr().out
    assert main(["secat", "train", "--out", str(run), "--resume"]) == 0  # nothing left to do
    assert main(["secat", "eval", "--run", str(run), "--data", str(world["eval"]), "--ways", "2", "3",
                 "--shots", "1", "2", "--episodes", "5", "--device", "cpu", "--labelled", str(world["labelled"]),
                 *common]) == 0
    out = capsys.readouterr().out
    assert "secat" in out and "untrained" in out and "real-names" in out and "3-way 2-shot" in out
    result = json.loads((run / "eval" / "secat_eval.json").read_text())
    assert set(result["results"]) == {"secat", "untrained", "real-names"}
    for row in result["results"].values():
        assert set(row) == {"2-way 1-shot", "2-way 2-shot", "3-way 1-shot", "3-way 2-shot"}
        assert all(r["n"] == 5 and 0 <= r["accuracy"] <= r["name_in_output"] <= 100 for r in row.values())
    assert result["classes"] == sorted(EVAL_NAMES) and result["steps_trained"] == 12
    real = json.loads((run / "real-names" / "secat.json").read_text())
    assert sorted(real["names"]) == sorted(EVAL_NAMES) and real["config"]["labelled"]
    strips = sorted((run / "eval").glob("strip_*.png"))
    assert [p.name for p in strips] == ["strip_2way_1shot.png", "strip_2way_2shot.png", "strip_3way_1shot.png",
                                        "strip_3way_2shot.png"]
    with Image.open(strips[-1]) as im:
        im.load()
        assert im.width == 8 + 7 * (96 + 8) and im.height > 96  # 6 support images and the query


def test_bad_input_is_one_line(world: dict[str, Path], capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    base = ["secat", "train", "--encoder", ENCODER, "--images", str(world["images"]), *CPU]
    assert main([*base, "--lm", str(world["root"] / "no-lm"), "--out", str(world["root"] / "r1")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--lm" in err and "no such folder" in err and len(err.splitlines()) == 1
    assert main(["secat", "eval", "--run", str(world["images"]), "--data", str(world["eval"])]) == 2
    assert "not a SeCAt run" in capsys.readouterr().err
    assert main(["secat", "train", "--out", str(world["root"] / "r2")]) == 2
    assert "needs --encoder, --lm, --images" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if the extra is not installed
    assert main([*base, "--lm", str(world["lm"]), "--out", str(world["root"] / "r3")]) == 2
    err = capsys.readouterr().err.strip()
    assert "vidssl[secat]" in err and len(err.splitlines()) == 1
