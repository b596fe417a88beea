"""`vidssl config`: print the resolved configuration as YAML."""

from __future__ import annotations

import argparse

from vidssl.cli.pretrain import DEFAULT_PRESET, split_preset
from vidssl.config import list_presets, load_config, to_yaml


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "config",
        help="print the resolved config (preset + overrides) as YAML",
        description="Print the configuration a run would use. Presets: " + ", ".join(list_presets()),
    )
    p.add_argument("args", nargs="*", metavar="[PRESET_OR_YAML] [key=value ...]",
                   help=f"a preset name or YAML file (default: '{DEFAULT_PRESET}'), then dotted overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    preset, overrides = split_preset(args.args)
    print(to_yaml(load_config(preset or DEFAULT_PRESET, overrides)), end="")
    return 0
