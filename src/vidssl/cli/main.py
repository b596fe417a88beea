"""The `vidssl` command. Each subcommand lives in its own module with `register(subparsers)`."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from vidssl import __version__
from vidssl.errors import VidsslError, one_line

# (module, group): group None = top-level command; "eval"/"show" = a subcommand of that group.
COMMAND_MODULES: tuple[tuple[str, str | None], ...] = (
    ("vidssl.cli.pretrain", None),
    ("vidssl.cli.ingest", None),
    ("vidssl.cli.export", None),
    ("vidssl.cli.config_cmd", None),
    ("vidssl.cli.evaluate", "eval"),
    ("vidssl.cli.eval_semseg", "eval"),
    ("vidssl.cli.eval_objdisc", "eval"),
    ("vidssl.cli.eval_track", "eval"),
    ("vidssl.cli.eval_report", "eval"),
    ("vidssl.cli.show_attention", "show"),
    ("vidssl.cli.show_tracks", "show"),
    ("vidssl.cli.show_segment", "show"),
    ("vidssl.cli.secat", "secat"),
    ("vidssl.cli.analyze", None),
    ("vidssl.cli.anonymize", None),
    ("vidssl.cli.wtours", "wtours"),
)

GROUP_HELP = {
    "eval": "evaluate an encoder (k-NN, linear probe, DAVIS, unsupervised and linear segmentation, object "
            "discovery, tracking) or several in one report",
    "show": "pictures of what an encoder sees (attention, tracked objects, segmentation)",
    "secat": "SeCAt: few-shot naming with a small LM, adapted on self-supervised clusters (train, eval)",
    "wtours": "the Walking Tours dataset: list the ten videos and where to get them, check downloaded files",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidssl",
        description="Self-supervised image encoders from long videos: pretrain, ingest, evaluate, show, export.",
    )
    parser.add_argument("--version", action="version", version=f"vidssl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for module_name, group in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        target = commands
        if group is not None:
            if group not in groups:
                group_parser = commands.add_parser(group, help=GROUP_HELP[group], description=GROUP_HELP[group])
                groups[group] = group_parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
            target = groups[group]
        module.register(target)
    return parser


def _describe_os_error(e: OSError) -> str:
    what = e.strerror or (errno.errorcode.get(e.errno, "") if e.errno else "") or type(e).__name__
    paths = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    return one_line(f"{paths}: {what}" if paths else f"{what}: {e}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Presets and key=value overrides may come before or after options ("--video x optim.lr=1").
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "args") or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.args = list(args.args) + extra
    try:
        result = args.func(args)
        sys.stdout.flush()  # a closed stdout fails here, inside the handlers below
    except VidsslError as e:  # OutputError (vidssl.io), ConfigError, WeightsError, ...
        print(f"vidssl: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vidssl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of stdout went away (`vidssl config | head -1`): say nothing more, exit non-zero
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 128 + 13  # as if killed by SIGPIPE
    except OSError as e:
        # an OS error no command turned into a VidsslError (a read or write of some path): one line
        # naming the path, and a failing exit status, never a silent one
        print(f"vidssl: error: {_describe_os_error(e)}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
