"""`vidssl wtours check DIR`: which Walking Tours videos are present, each file's probed metadata
against the manifest, and known problems found in the content (a blank tail, frozen stretches,
a header duration the decodable frames do not reach), with the `vidssl ingest` command that
keeps them out of training."""

from __future__ import annotations

import shlex
from pathlib import Path

from tqdm import tqdm

from vidssl.data.blank import BlankThresholds
from vidssl.data.errors import VideoError
from vidssl.data.video import iter_frames, probe_video
from vidssl.wtours.change import ChangeMeter, stretches
from vidssl.wtours.manifest import TourEntry, format_duration, match_entry, normalise, video_files

SCAN_SHORT_SIDE = 64  # the content scan needs only small frames (blank.py works at 64 px wide)
FPS_TOLERANCE = 0.01  # relative
DURATION_TOLERANCE = (0.02, 30.0)  # relative, and at least this many seconds


def _differs(a: float, b: float, rel: float, floor: float = 0.0) -> bool:
    return abs(a - b) > max(rel * abs(b), floor)


def compare(info, entry: TourEntry | None) -> list[str]:
    """What the probed file says that the manifest entry does not."""
    if entry is None:
        return []
    out = []
    if (info.width, info.height) != (entry.width, entry.height):
        out.append(f"resolution {info.width}x{info.height}, manifest {entry.width}x{entry.height}"
                   + (" (a downscaled copy, as later papers used)" if info.height < entry.height else ""))
    if _differs(info.fps, entry.fps, FPS_TOLERANCE):
        out.append(f"{info.fps:.3f} fps, manifest {entry.fps:g} fps")
    if entry.duration_s is not None and _differs(info.duration, entry.duration_s, *DURATION_TOLERANCE):
        out.append(f"header duration {format_duration(info.duration)}, manifest {format_duration(entry.duration_s)}")
    return out


def scan_content(path: Path, fps: float, thresholds: BlankThresholds, progress: bool, total: int) -> dict:
    """Decode every frame (small) once: blank and frozen stretches, and where decoding ends."""
    meter = ChangeMeter()
    bar = tqdm(total=total, desc=f"check {path.name}", unit="frame", disable=not progress or None, leave=False,
               dynamic_ncols=True)
    try:
        for i, rgb in iter_frames(path, short_side=SCAN_SHORT_SIDE):
            meter.add(i, rgb)
            bar.update(1)
    finally:
        bar.close()
    if not meter.indices:
        return {"decoded_frames": 0, "last_frame": -1, "stretches": []}
    idx = meter.indices
    found = []
    for s in stretches(meter.stats(), fps, thresholds):
        a, b = idx[s.start], idx[s.end - 1] + 1
        found.append({"kind": s.kind, "start": a, "end": b, "start_s": a / fps, "end_s": b / fps})
    return {"decoded_frames": len(idx), "last_frame": idx[-1], "stretches": found}


def problems_of(info, content: dict) -> list[dict]:
    """Known problems: the blank tail (a blank stretch that runs to the end), other blank and frozen
    stretches, and a header frame count the decodable content does not reach."""
    fps = info.fps
    out = []
    end = content["last_frame"] + 1
    for s in content["stretches"]:
        tail = s["kind"] == "blank" and s["end"] >= end
        kind = "blank tail" if tail else f"{s['kind']} stretch"
        out.append({**s, "kind": kind, "text": f"{kind}: frames {s['start']}-{s['end'] - 1} "
                    f"({format_duration(s['start_s'])}-{format_duration(s['end_s'])}, {s['end_s'] - s['start_s']:.1f} s)"})
    short = info.num_frames - end
    if content["decoded_frames"] == 0:
        out.append({"kind": "undecodable", "text": "no frame decodes"})
    elif short > max(fps, 0.01 * info.num_frames):
        out.append({"kind": "duration", "start": end, "end": info.num_frames, "start_s": end / fps,
                    "end_s": info.num_frames / fps,
                    "text": f"the header says {info.num_frames} frames ({format_duration(info.duration)}) but decoding "
                            f"ends at frame {end} ({format_duration(end / fps)})"})
    return out


def ingest_command(path: Path, entry: TourEntry | None, thresholds: BlankThresholds) -> str:
    """The exact `vidssl ingest` command that stores the file with those stretches excluded (ingest
    finds them with the same detector and thresholds, and stops where decoding stops)."""
    name = normalise(entry.city) if entry else normalise(path.stem) or "video"
    return shlex.join(["vidssl", "ingest", str(path), "--out", f"stores/{name}",
                       "--blank-seconds", f"{thresholds.blank_seconds:g}",
                       "--frozen-seconds", f"{thresholds.frozen_seconds:g}", "--report"])


def check_file(path: Path, entry: TourEntry | None, content: bool, thresholds: BlankThresholds,
               progress: bool) -> dict:
    report: dict = {"path": str(path), "city": entry.city if entry else None}
    try:
        info = probe_video(path)
    except VideoError as e:
        report.update(error=str(e), mismatches=[], problems=[{"kind": "unreadable", "text": str(e)}], command=None)
        return report
    report["probed"] = {"frames": info.num_frames, "fps": info.fps, "width": info.width, "height": info.height,
                        "duration_s": info.duration, "codec": info.codec}
    report["mismatches"] = compare(info, entry)
    report["problems"], report["command"] = [], None
    if content:
        scan = scan_content(path, info.fps, thresholds, progress, info.num_frames)
        report["decodable"] = {"frames": scan["decoded_frames"], "last_frame": scan["last_frame"],
                               "duration_s": (scan["last_frame"] + 1) / info.fps}
        report["problems"] = problems_of(info, scan)
        if any(p["kind"] not in ("unreadable", "undecodable") for p in report["problems"]):
            report["command"] = ingest_command(path, entry, thresholds)
    return report


def check_folder(folder: str | Path, entries: tuple[TourEntry, ...], content: bool = True,
                 thresholds: BlankThresholds = BlankThresholds(), progress: bool = True) -> dict:
    """Every entry (present or not, with its files' reports) and the video files no entry matches."""
    root = Path(folder)
    files = video_files(root)
    by_city: dict[str, list[Path]] = {e.city: [] for e in entries}
    unmatched: list[Path] = []
    for f in files:
        e = match_entry(f, root, entries)
        (by_city[e.city] if e else unmatched).append(f)
    videos = []
    for e in entries:
        reports = [check_file(f, e, content, thresholds, progress) for f in by_city[e.city]]
        videos.append({"city": e.city, "source_id": e.source_id, "present": bool(reports), "files": reports})
    return {"folder": str(root), "videos": videos,
            "unmatched": [check_file(f, None, content, thresholds, progress) for f in unmatched],
            "thresholds": {"blank_seconds": thresholds.blank_seconds, "frozen_seconds": thresholds.frozen_seconds}}


def format_report(result: dict) -> str:
    """The human-readable form of `check_folder`'s result."""
    lines = []
    present = sum(v["present"] for v in result["videos"])
    lines.append(f"{result['folder']}: {present} of {len(result['videos'])} manifest videos present")

    def file_lines(r: dict, indent: str = "    ") -> None:
        p = r.get("probed")
        if p:
            dec = r.get("decodable")
            extra = f", decodable to {format_duration(dec['duration_s'])}" if dec else ""
            lines.append(f"{indent}{r['path']}: {p['width']}x{p['height']} {p['fps']:.3f} fps, {p['frames']} frames "
                         f"({format_duration(p['duration_s'])}){extra}, {p['codec']}")
        else:
            err = str(r.get("error"))
            lines.append(f"{indent}{r['path']}: {err.removeprefix(r['path'] + ': ')}")  # not the path twice
        for m in r["mismatches"]:
            lines.append(f"{indent}  mismatch: {m}")
        for pr in r["problems"]:
            if pr["kind"] != "unreadable":
                lines.append(f"{indent}  problem: {pr['text']}")
        if r["command"]:
            lines.append(f"{indent}  fix: {r['command']}")
        elif not r["mismatches"] and not r["problems"]:
            lines.append(f"{indent}  ok")

    for v in result["videos"]:
        lines.append(f"  {v['city']} ({v['source_id']}): {'present' if v['present'] else 'missing'}")
        for r in v["files"]:
            file_lines(r)
    if result["unmatched"]:
        lines.append(f"  {len(result['unmatched'])} video file(s) match no manifest entry (name them after the city "
                     "or the source id):")
        for r in result["unmatched"]:
            file_lines(r)
    return "\n".join(lines)
