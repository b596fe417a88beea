"""Self-context episodes: N-way k-shot interleaved (image, caption) sequences plus a query image,
and their token layout for a causal LM.

A sequence reads `[BOS] <img>*m " This is a" " <name>" "." ... <img>*m " This is a"` and, for
training, the query's `" <name>" "."`, the only tokens the loss sees. Each piece is tokenized on
its own, so the positions of image slots and caption tokens are known exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from vidssl.errors import VidsslError
from vidssl.secat.names import name_tokens, piece_tokens

CAPTION_PREFIX = " This is a"
CAPTION_END = "."
IGNORE = -100  # label of every position the loss skips


@dataclass(frozen=True)
class Episode:
    """Image indices into a pool (support in sequence order, then the query) and their names."""

    support: tuple[int, ...]
    support_names: tuple[str, ...]
    support_classes: tuple[int, ...]
    query: int
    query_name: str
    query_class: int

    @property
    def images(self) -> tuple[int, ...]:
        return (*self.support, self.query)


class EpisodeSampler:
    """N-way k-shot episodes over images labelled by class (a cluster or a folder).

    `binding='class'`: a class always carries its own name (`names[c]`). `binding='episode'`: the
    episode's N classes get N names drawn afresh from `names`, so the name of the query can only be
    read from the context, never remembered from the weights (docs/secat.md)."""

    def __init__(self, classes: Sequence[int], names: Sequence[str], *, binding: str = "class") -> None:
        if binding not in ("class", "episode"):
            raise VidsslError(f"name binding must be 'class' or 'episode', not {binding!r}")
        self.names = list(names)
        self.binding = binding
        self.members: dict[int, list[int]] = {}
        for i, c in enumerate(classes):
            self.members.setdefault(int(c), []).append(i)

    def eligible(self, shots: int) -> list[int]:
        """Classes with enough images for k support images and a distinct query."""
        return sorted(c for c, m in self.members.items() if len(m) >= shots + 1)

    def sample(self, ways: int, shots: int, rng: random.Random) -> Episode:
        pool = self.eligible(shots)
        if ways < 1 or shots < 1:
            raise VidsslError(f"ways and shots must be >= 1 (got {ways}-way {shots}-shot)")
        if len(pool) < ways:
            raise VidsslError(f"{ways}-way {shots}-shot needs {ways} classes with at least {shots + 1} images each; "
                              f"only {len(pool)} have that many")
        chosen = rng.sample(pool, ways)
        names = (rng.sample(self.names, ways) if self.binding == "episode" else [self.names[c] for c in chosen])
        query_slot = rng.randrange(ways)
        support: list[tuple[int, int, str]] = []
        query = -1
        for slot, (c, name) in enumerate(zip(chosen, names)):
            picked = rng.sample(self.members[c], shots + (slot == query_slot))
            if slot == query_slot:
                query = picked.pop()
            support += [(i, c, name) for i in picked]
        rng.shuffle(support)  # interleaved classes, as in Frozen's few-shot sequences
        return Episode(tuple(i for i, _, _ in support), tuple(n for _, _, n in support),
                       tuple(c for _, c, _ in support), query, names[query_slot], chosen[query_slot])


def episode_rng(seed: int, *parts: int) -> random.Random:
    """The RNG of one episode, a pure function of (seed, step, rank, index): a resumed run draws
    the episodes an uninterrupted one would have."""
    return random.Random("secat-" + "-".join(str(p) for p in (seed, *parts)))


@dataclass
class Layout:
    """One sequence: `ids` (L,) (image slots hold the pad id), `slot` (L,) the image-embedding row
    each image position takes (image j, token t -> j*m + t; -1 for text), `labels` (L,) the
    token to predict at each position or IGNORE (only the query caption is kept)."""

    ids: torch.Tensor
    slot: torch.Tensor
    labels: torch.Tensor


class LayoutBuilder:
    """Token layouts for a tokenizer, with `m` embedding slots per image."""

    def __init__(self, tokenizer: Any, image_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.m = image_tokens
        # each piece as it reads inside the running text: the prefix after a caption's '.', the end after a word
        self.prefix = piece_tokens(tokenizer, CAPTION_PREFIX, anchor=".")
        self.end = piece_tokens(tokenizer, CAPTION_END, anchor="a")
        self.bos = [tokenizer.bos_token_id] if getattr(tokenizer, "bos_token_id", None) is not None else []
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self._names: dict[str, list[int]] = {}

    def name(self, name: str) -> list[int]:
        if name not in self._names:
            self._names[name] = name_tokens(self.tokenizer, name)
        return self._names[name]

    def build(self, support_names: Sequence[str], query_name: str | None) -> Layout:
        """The layout of support captions plus the query; `query_name=None` ends at the query's
        " This is a" (the generation prompt)."""
        ids: list[int] = list(self.bos)
        slot: list[int] = [-1] * len(ids)
        labels: list[int] = [IGNORE] * len(ids)

        def image(j: int) -> None:
            ids.extend([self.pad_id] * self.m)
            slot.extend(range(j * self.m, (j + 1) * self.m))
            labels.extend([IGNORE] * self.m)

        def text(tokens: list[int], target: bool = False) -> None:
            ids.extend(tokens)
            slot.extend([-1] * len(tokens))
            labels.extend(tokens if target else [IGNORE] * len(tokens))

        for j, name in enumerate(support_names):
            image(j)
            text(self.prefix + self.name(name) + self.end)
        image(len(support_names))
        text(self.prefix)
        if query_name is not None:
            text(self.name(query_name) + self.end, target=True)
        as_long = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
        return Layout(as_long(ids), as_long(slot), as_long(labels))


def collate(layouts: Sequence[Layout], images_per_sequence: Sequence[int], image_tokens: int,
            pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: ids, slot (offset so that rows index the batch's stacked image
    embeddings, -1 for text and padding), labels, attention_mask."""
    length = max(len(l.ids) for l in layouts)
    b = len(layouts)
    ids = torch.full((b, length), pad_id, dtype=torch.long)
    slot = torch.full((b, length), -1, dtype=torch.long)
    labels = torch.full((b, length), IGNORE, dtype=torch.long)
    mask = torch.zeros((b, length), dtype=torch.long)
    offset = 0
    for i, (l, n) in enumerate(zip(layouts, images_per_sequence)):
        L = len(l.ids)
        ids[i, :L], labels[i, :L], mask[i, :L] = l.ids, l.labels, 1
        slot[i, :L] = torch.where(l.slot >= 0, l.slot + offset, l.slot)
        offset += n * image_tokens
    return {"ids": ids, "slot": slot, "labels": labels, "attention_mask": mask}
