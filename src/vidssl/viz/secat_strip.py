"""The SeCAt example strip: the support images with their captions, then the query with what each
mapper answered (and the right name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from vidssl.io import atomic_write

BACKGROUND, TEXT, GOOD, BAD = (255, 255, 255), (20, 20, 20), (0, 120, 0), (170, 0, 0)


def _tile(path: str, size: int) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB").resize((size, size))


def save_secat_strip(path: str | Path, example: dict[str, Any], tile: int = 96) -> Path:
    """PNG of one evaluation episode (an entry of `evaluate_secat(...)['examples']`)."""
    font = ImageFont.load_default()
    answers: dict[str, str] = example["answers"]
    n = len(example["support"]) + 1
    gap, caption_h = 8, 16
    answer_h = caption_h * (len(answers) + 1)
    width = n * (tile + gap) + gap
    height = gap + 14 + tile + caption_h + answer_h + gap
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, 2), f"{example['setting']}: support, then the query", fill=TEXT, font=font)
    top = gap + 14
    for j, (img, name) in enumerate(zip(example["support"], example["support_names"])):
        x = gap + j * (tile + gap)
        canvas.paste(_tile(img, tile), (x, top))
        draw.text((x, top + tile + 2), f"a {name}."[: tile // 6], fill=TEXT, font=font)
    qx = gap + (n - 1) * (tile + gap)
    canvas.paste(_tile(example["query"], tile), (qx, top))
    draw.rectangle((qx - 2, top - 2, qx + tile + 1, top + tile + 1), outline=(230, 140, 0), width=2)
    y = top + tile + 2 + caption_h  # below the support captions
    draw.text((gap, y), f"query: {example['query_name']}", fill=TEXT, font=font)
    for key, answer in answers.items():
        y += caption_h
        ok = example.get("correct", {}).get(key, False)
        draw.text((gap, y), f"{key}: {answer or '(nothing)'}", fill=GOOD if ok else BAD, font=font)
    return atomic_write(Path(path), canvas.save)
