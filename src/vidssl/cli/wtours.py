"""`vidssl wtours list` and `vidssl wtours check DIR`: the Walking Tours manifest and a check of
downloaded files against it (SPEC §2)."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="the ten Walking Tours videos and how to obtain them",
                              description="The ten videos (city, source id, expected duration, resolution, fps, "
                                          "licence), the mirrors that carry them and where the sources disagree. "
                                          "Nothing is downloaded.")
    p.add_argument("--manifest", metavar="FILE.json", help="a custom manifest instead of the built-in one")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_list)

    c = subparsers.add_parser("check", help="which videos are in DIR, their metadata against the manifest, known problems",
                              description="Find the manifest's videos in DIR (by city name or source id in the file "
                                          "or folder name), probe each file against the manifest, decode it once "
                                          "(small) to find a blank tail, frozen stretches and a header duration the "
                                          "content does not reach, and print the vidssl ingest command that keeps "
                                          "them out of training.")
    c.add_argument("folder", metavar="DIR", help="folder holding the downloaded videos (searched recursively)")
    c.add_argument("--manifest", metavar="FILE.json", help="a custom manifest instead of the built-in one")
    c.add_argument("--no-content", action="store_true", help="metadata only: do not decode the files")
    c.add_argument("--blank-seconds", type=float, default=None,
                   help="report near-black or near-constant runs at least this long (default: ingest's, 2.0)")
    c.add_argument("--frozen-seconds", type=float, default=None,
                   help="report runs of repeated frames at least this long (default: ingest's, 5.0)")
    c.add_argument("--json", metavar="FILE", nargs="?", const="-",
                   help="machine-readable report to FILE (or stdout with no FILE)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=run_check)


def run_list(args: argparse.Namespace) -> int:
    from vidssl.wtours.manifest import MIRRORS, NOTES, format_duration, load_manifest

    entries = load_manifest(args.manifest)
    if args.json:
        print(json.dumps({"videos": [e.to_json() for e in entries], "mirrors": list(MIRRORS), "notes": list(NOTES)},
                         indent=1))
        return 0
    print(f"{'city':<13} {'source id':<12} {'duration':>8}  {'resolution':<10} {'fps':>5}  licence    note")
    for e in entries:
        print(f"{e.city:<13} {e.source_id:<12} {format_duration(e.duration_s):>8}  {e.width}x{e.height:<5} "
              f"{e.fps:>5g}  {e.licence:<10} {e.note}")
    print("\nduration ?: no source states it. How to obtain them (no download is run by vidssl):")
    for m in MIRRORS:
        print(f"  - {m}")
    print("Where the sources disagree:")
    for n in NOTES:
        print(f"  - {n}")
    print("Then: vidssl wtours check DIR")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from vidssl.data.blank import BlankThresholds
    from vidssl.errors import VidsslError
    from vidssl.io import write_text
    from vidssl.wtours.check import check_folder, format_report
    from vidssl.wtours.manifest import load_manifest

    th = BlankThresholds()
    for name in ("blank_seconds", "frozen_seconds"):
        v = getattr(args, name)
        if v is not None:
            if v <= 0:
                raise VidsslError(f"--{name.replace('_', '-')} must be positive, got {v}")
            th = replace(th, **{name: v})
    result = check_folder(args.folder, load_manifest(args.manifest), content=not args.no_content, thresholds=th,
                          progress=not args.no_progress)
    if args.json == "-":
        print(json.dumps(result, indent=1))
        return 0
    if args.json:
        write_text(args.json, json.dumps(result, indent=1) + "\n")
    print(format_report(result))
    return 0
