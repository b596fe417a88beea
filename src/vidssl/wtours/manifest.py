"""The ten Walking Tours videos (SPEC §2) and how a file on disk is matched to one of them.

Facts come from the Hugging Face dataset card and its WTour.txt (`[HF]` in SPEC §2). Where the
sources disagree the manifest keeps the card's value and `NOTES` says so: the card says 4K at
60 fps, later papers trained on 720p / 30 fps copies; per-video durations are not published
except the shortest (wildlife safari, 59 min), the longest (Bangkok, 2 h 55 min) and Venice
(1 h 50 min of content; the figshare file's header says 3 h 40 min, SPEC §2 known issue).
A custom manifest (JSON, same fields) can replace the built-in one, e.g. for your own walks.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vidssl.errors import VidsslError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".mpg", ".mpeg", ".m4v", ".ts")
CARD_SIZE = (3840, 2160)  # [HF] dataset card: 4K
CARD_FPS = 60.0  # [HF] dataset card
LICENCE = "CC-BY-4.0"  # [HF] repo licence tag

MIRRORS = (
    "Hugging Face dataset card (huggingface.co/datasets/shawshankvkt/Walking_Tours): WTour.txt lists the YouTube ids "
    "and download_WTours.py fetches the highest-resolution adaptive mp4 stream with pytube",
    "figshare mirror: uvaauas.figshare.com, article 25189275 (the Venice file there runs on with "
    "blank frames after 1:50:00, DoRA_ICLR24 issue #4)",
    "YouTube: https://www.youtube.com/watch?v=<source id> (any downloader; keep the original resolution)",
)

NOTES = (
    "resolution and fps: the dataset card says 4K (3840x2160) at 60 fps; later papers used 720p / 30 fps "
    "copies. `check` reports what each file really is.",
    "total length: the card's mean of 1 h 38 min gives about 16.3 h for 10 videos; a secondary source "
    "quotes 23 h. Unresolved.",
    "faces: the authors blurred faces and plates with deface (`vidssl anonymize`); whether the blurred "
    "copies were used for training is unknown.",
)


class ManifestError(VidsslError):
    """A custom manifest that cannot be read or lacks a field."""


@dataclass(frozen=True)
class TourEntry:
    city: str
    source_id: str  # YouTube id
    duration_s: float | None  # expected content duration; None where no source states it
    width: int = CARD_SIZE[0]
    height: int = CARD_SIZE[1]
    fps: float = CARD_FPS
    licence: str = LICENCE
    aliases: tuple[str, ...] = field(default_factory=tuple)  # other spellings found in file names
    note: str = ""

    def names(self) -> list[str]:
        """Normalised names a file or folder may carry: the city, its aliases, the source id."""
        return [normalise(n) for n in (self.city, *self.aliases)] + [self.source_id.lower()]

    def to_json(self) -> dict:
        d = asdict(self)
        d["aliases"] = list(self.aliases)
        return d


WALKING_TOURS: tuple[TourEntry, ...] = (
    TourEntry("Amsterdam", "E07rTPgIvn0", None, note="the official slurm script trains on it"),
    TourEntry("Bangkok", "hUGcHvN4mME", 2 * 3600 + 55 * 60, note="the longest (card: max 2 h 55 min)"),
    TourEntry("Chiang Mai", "jyxIRzlkO_g", None, aliases=("chiangmai",)),
    TourEntry("Istanbul", "mA9lYWyXMYU", None),
    TourEntry("Kuala Lumpur", "yLTycPjm0nk", None, aliases=("Kuala_Lampur",),
              note="spelt Kuala_Lampur in WTour.txt"),
    TourEntry("Singapore", "aUJl46bEWYo", None),
    TourEntry("Stockholm", "Jr9x-RB4E1U", None),
    TourEntry("Venice", "fGX0Te6pFvk", 1 * 3600 + 50 * 60,
              note="figshare file reports 3 h 40 min, blank after 1:50:00 (DoRA_ICLR24 #4); 'WT-Venice' of the README"),
    TourEntry("Zurich", "_NmYvuEILw4", None),
    TourEntry("Wildlife", "Q0ML5oAjX_w", 59 * 60, aliases=("safari", "wildlife_safari"),
              note="the shortest (card: min 59 min); id changed from YcI_UXfMTgo in HF commit 2901e37"),
)


def normalise(name: str) -> str:
    """Lower case, letters and digits only: 'Walking_Tour-Chiang Mai' -> 'walkingtourchiangmai'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def load_manifest(path: str | Path | None) -> tuple[TourEntry, ...]:
    """The built-in manifest, or a JSON list of entries ({city, source_id, duration_s, width,
    height, fps, licence?, aliases?, note?})."""
    if path is None:
        return WALKING_TOURS
    p = Path(path)
    try:
        rows = json.loads(p.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{p}: no such manifest file") from None
    except (OSError, ValueError) as e:
        raise ManifestError(f"{p}: not a JSON manifest ({e})") from None
    if isinstance(rows, dict):
        rows = rows.get("videos", rows)
    if not isinstance(rows, list) or not rows:
        raise ManifestError(f"{p}: a manifest is a non-empty JSON list of entries (or {{'videos': [...]}})")
    out = []
    for k, row in enumerate(rows):
        missing = [f for f in ("city", "source_id") if f not in row]
        if missing:
            raise ManifestError(f"{p}: entry {k} lacks {', '.join(missing)}")
        known = {f: row[f] for f in TourEntry.__dataclass_fields__ if f in row}
        known["aliases"] = tuple(known.get("aliases", ()))
        try:
            out.append(TourEntry(**known))
        except TypeError as e:
            raise ManifestError(f"{p}: entry {k}: {e}") from None
    return tuple(out)


def video_files(folder: str | Path) -> list[Path]:
    """Every video file under `folder` (recursively), by name."""
    root = Path(folder)
    if not root.is_dir():
        raise VidsslError(f"{root}: no such folder" if not root.exists() else f"{root}: not a folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def match_entry(path: Path, root: Path, entries: tuple[TourEntry, ...]) -> TourEntry | None:
    """The entry whose city, alias or source id appears in the file's name or its folders below
    `root` (the download script writes videos/<city>/*.mp4); the longest matching name wins."""
    rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    parts = [normalise(p) for p in rel.with_suffix("").parts]
    raw = [p.lower() for p in rel.with_suffix("").parts]
    best, best_len = None, 0
    for e in entries:
        for name in e.names():
            hay = raw if name == e.source_id.lower() else parts  # ids keep their - and _
            if name and any(name in p for p in hay) and len(name) > best_len:
                best, best_len = e, len(name)
    return best


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
