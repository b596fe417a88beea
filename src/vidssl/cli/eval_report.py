"""`vidssl eval report --weights A --weights B ... --suite SUITE.yaml --out DIR`: a suite of
evaluations for several encoders, written as DIR/report.md, report.json and report.png.

The suite is checked whole before anything runs; a failed evaluation is reported in its cells
and the others go on. The exit status is 0 when every cell succeeded, 1 when some failed (the
report is written either way), 2 for bad input (the suite, the options).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="run a suite of evaluations for several encoders: report.md, report.json, bar chart",
        description="Run every evaluation of SUITE.yaml (a list of {eval: knn|linear|davis|unsup-seg|semseg|objdisc|"
                    "track, name, args: {keyword args of its Python API}, metrics: [keys]}) for every --weights; "
                    "write DIR/report.md (metric x encoder, best in bold), DIR/report.json (every result) and "
                    "DIR/report.png (grouped bars). A failed evaluation shows its error in its cells.")
    p.add_argument("--weights", required=True, action="append", metavar="W",
                   help="an encoder, as for any `vidssl eval` command (an export, a run directory or checkpoint, "
                        "random:MODEL_NAME); repeat for each encoder to compare")
    p.add_argument("--suite", required=True, metavar="SUITE.yaml", help="the evaluations to run (see the description)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for report.md, report.json and report.png")
    p.add_argument("--checkpoint-key", default="teacher", choices=("teacher", "student"),
                   help="network to evaluate inside training checkpoints (default: teacher)")
    p.add_argument("--seed", type=int, default=0, help="seed of random:MODEL_NAME initialisation (default 0)")
    p.add_argument("--device", default="auto", help="torch device: auto (cuda if available, else cpu), cpu, cuda:0 ...")
    p.add_argument("--num-workers", type=int, help="data-loader workers for every evaluation (default: each one's own)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="feature cache root, DIR/features (default: $VIDSSL_CACHE_DIR, else ~/.cache/vidssl; "
                        "davis caches only when this is given)")
    p.add_argument("--no-cache", action="store_true", help="recompute features and do not store them")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from vidssl.eval.report import one_line_warnings
    from vidssl.eval.suite import load_suite, plural, report_markdown, run_suite, write_report

    items = load_suite(args.suite)
    with one_line_warnings():
        report = run_suite(args.weights, items, suite=args.suite, device=args.device, seed=args.seed,
                           checkpoint_key=args.checkpoint_key, cache_dir=args.cache_dir,
                           cache=False if args.no_cache else None, num_workers=args.num_workers)
    paths = write_report(report, args.out)
    print(report_markdown(report).split("\n## ", 1)[0].rstrip(), flush=True)  # the title and the table
    cells = len(report.weights) * len(report.items)
    failed = report.failed()
    print(f"report: {plural(len(report.items), 'evaluation')} x {plural(len(report.weights), 'encoder')}, "
          f"{cells - failed}/{cells} succeeded -> {paths['md']} {paths['json']} {paths['png']}", flush=True)
    return 1 if failed else 0
