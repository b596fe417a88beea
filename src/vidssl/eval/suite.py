"""A suite of evaluations for several encoders, and its comparison report (report.md, report.json
and a grouped bar chart report.png: metric x encoder, the paper's figure for the user's encoders).

A suite is a YAML list; each item names an evaluation and the keyword arguments of its Python
API (`vidssl.eval.evaluate_*`), and optionally a label and the metrics to show:

    - eval: knn
      args: {train: imagenet/train, val: imagenet/val}
    - eval: unsup-seg
      name: voc-seg
      args: {data: VOCdevkit/VOC2012, layout: voc}
      metrics: [frame/mIoU, dataset/mIoU]

A metric key is a path into the result's "metrics" ("frame/mIoU"; "/" because "SR0.5" holds a
dot). The suite is checked whole before anything runs (one-line errors). Every (encoder,
evaluation) cell then runs in turn; a cell that raises holds its one-line error and the others
go on. Encoders are passed as their weights strings, so each evaluation derives the same weights
id as a direct call and the feature cache is shared with direct calls and between evaluations.
"""

from __future__ import annotations

import importlib
import inspect
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from vidssl.errors import VidsslError, first_line, one_line
from vidssl.eval.report import EvalWarning, clean, warn
from vidssl.io import atomic_write, ensure_dir, write_json, write_text


@dataclass(frozen=True)
class EvalSpec:
    home: str  # "module:function", imported on first use
    required: tuple[str, ...]  # required args, used when the module cannot be imported to check them
    headline: Callable[[dict[str, Any]], list[str]]  # default metric keys from the item's args


def _knn_headline(args: dict[str, Any]) -> list[str]:
    ks = [int(k) for k in (args.get("k") or (10, 20, 100, 200))]
    return [f"top1@{20 if 20 in ks else ks[0]}"]  # DINO reports k = 20


def _unsup_headline(args: dict[str, Any]) -> list[str]:
    protocols = args.get("protocols") or (["frame", "dataset"] if args.get("layout") == "voc" else ["frame", "clip"])
    return [f"{p}/mIoU" for p in protocols]


EVALS: dict[str, EvalSpec] = {
    "knn": EvalSpec("vidssl.eval.knn:evaluate_knn", ("train", "val"), _knn_headline),
    # DINO's eval_linear reports the best validation accuracy over the epochs
    "linear": EvalSpec("vidssl.eval.linear:evaluate_linear", ("train", "val"), lambda a: ["best_top1"]),
    "davis": EvalSpec("vidssl.eval.davis:evaluate_davis", ("davis",), lambda a: ["J&F-mean"]),
    "unsup-seg": EvalSpec("vidssl.eval.unsup_seg:evaluate_unsup_seg", ("data", "layout"), _unsup_headline),
    "semseg": EvalSpec("vidssl.eval.semseg:evaluate_semseg", ("data", "layout"), lambda a: ["mIoU"]),
    "objdisc": EvalSpec("vidssl.eval.objdisc:evaluate_objdisc", ("data", "layout"), lambda a: ["CorLoc"]),
    "track": EvalSpec("vidssl.eval.track:evaluate_track", ("data",), lambda a: ["AO", "SR0.5", "SR0.75"]),
}

ITEM_KEYS = ("eval", "name", "args", "metrics")
# Set by the runner for every evaluation: never in a suite's args.
RESERVED_ARGS = ("encoder", "weights_id")


@dataclass
class SuiteItem:
    eval: str
    name: str
    args: dict[str, Any]
    metrics: list[str]

    def spec(self) -> EvalSpec:
        return EVALS[self.eval]


@dataclass
class Report:
    """Everything a suite run produced; `cells[name][weights]` is a result dict or an error string."""

    suite: str
    weights: list[str]
    items: list[SuiteItem]
    results: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    warnings: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per (evaluation, metric): the value per encoder (None: failed or not a number),
        the error per failed encoder, and the encoders with the best value."""
        out = []
        for item in self.items:
            for key in item.metrics:
                values: dict[str, float | None] = {}
                errors: dict[str, str] = {}
                for w in self.weights:
                    if w in self.errors.get(item.name, {}):
                        values[w], errors[w] = None, self.errors[item.name][w]
                        continue
                    try:
                        values[w] = metric_value(self.results[item.name][w], key)
                    except VidsslError as e:
                        values[w], errors[w] = None, str(e)
                numbers = [v for v in values.values() if v is not None]
                top = max(numbers) if numbers else None  # every headline metric is higher-is-better
                best = [w for w, v in values.items() if v is not None and v == top]
                out.append({"evaluation": item.name, "eval": item.eval, "metric": key, "values": values,
                            "errors": errors, "best": best})
        return out

    def failed(self) -> int:
        return sum(len(v) for v in self.errors.values())

    def to_json(self) -> dict[str, Any]:
        return clean({
            "suite": self.suite,
            "weights": self.weights,
            "evaluations": [{"eval": i.eval, "name": i.name, "args": i.args, "metrics": i.metrics} for i in self.items],
            "results": self.results,
            "errors": self.errors,
            "warnings": self.warnings,
            "table": self.rows(),
        })


# --------------------------------------------------------------------------- the suite file


def _function(spec: EvalSpec) -> Callable[..., dict[str, Any]]:
    module, name = spec.home.split(":")
    return getattr(importlib.import_module(module), name)


def _check_args(where: str, item: SuiteItem) -> None:
    """Missing and unknown args, against the evaluation's signature when its module imports
    (otherwise the known required args; the import error then shows in the evaluation's cells)."""
    spec = item.spec()
    reserved = sorted(set(item.args) & set(RESERVED_ARGS))
    if reserved:
        raise VidsslError(f"{where}: args {', '.join(reserved)} are set by the report for each --weights")
    try:
        params = list(inspect.signature(_function(spec)).parameters.values())[1:]  # the first is the encoder
    except Exception:  # noqa: BLE001 - any import failure is reported in the cells, not here
        params = None
    if params is None:
        required, known = list(spec.required), None
    else:
        required = [p.name for p in params if p.default is inspect.Parameter.empty
                    and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        known = None if any(p.kind == p.VAR_KEYWORD for p in params) else {p.name for p in params}
    missing = [r for r in required if r not in item.args]
    if missing:
        raise VidsslError(f"{where}: missing args: {', '.join(missing)}")
    if known is not None:
        unknown = sorted(set(item.args) - known)
        if unknown:
            valid = ", ".join(sorted(known - set(RESERVED_ARGS)))
            raise VidsslError(f"{where}: unknown args {', '.join(unknown)}; valid: {valid}")


def parse_suite(data: Any, source: str = "suite") -> list[SuiteItem]:
    """The items of a suite (the YAML's parsed value), checked whole: one-line VidsslError naming
    the item on the first problem."""
    if not isinstance(data, list) or not data:
        raise VidsslError(f"{source}: a suite is a non-empty YAML list of evaluations (- eval: knn ...)")
    items: list[SuiteItem] = []
    names: set[str] = set()
    for i, raw in enumerate(data, 1):
        where = f"{source}: evaluation {i}"
        if not isinstance(raw, dict):
            raise VidsslError(f"{where}: expected a mapping with keys {', '.join(ITEM_KEYS)}, got {type(raw).__name__}")
        bad = sorted(str(k) for k in raw if k not in ITEM_KEYS)
        if bad:
            raise VidsslError(f"{where}: unknown keys {', '.join(bad)}; valid: {', '.join(ITEM_KEYS)}")
        name_of_eval = raw.get("eval")
        if name_of_eval not in EVALS:
            raise VidsslError(f"{where}: eval {name_of_eval!r} is not one of {', '.join(EVALS)}")
        where = f"{where} ({name_of_eval})"
        args = raw.get("args")
        args = {} if args is None else args
        if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
            raise VidsslError(f"{where}: args must be a mapping of keyword arguments")
        name = raw.get("name")
        if name is None:  # the eval's name; a repeated eval gets #2, #3 ...
            name, n = name_of_eval, 2
            while name in names:
                name, n = f"{name_of_eval}#{n}", n + 1
        elif not isinstance(name, str) or not name.strip():
            raise VidsslError(f"{where}: name must be a non-empty string")
        if name in names:
            raise VidsslError(f"{where}: name {name!r} is used by another evaluation")
        names.add(name)
        metrics = raw.get("metrics")
        if metrics is None:
            metrics = EVALS[name_of_eval].headline(args)
        elif (not isinstance(metrics, list) or not metrics
              or not all(isinstance(m, str) and m.strip() for m in metrics)):
            raise VidsslError(f"{where}: metrics must be a non-empty list of metric keys (e.g. [top1@20])")
        item = SuiteItem(name_of_eval, name, dict(args), list(metrics))
        _check_args(where, item)
        items.append(item)
    return items


def load_suite(path: str | Path) -> list[SuiteItem]:
    from vidssl.config import ConfigError, load_yaml

    try:  # the config's YAML reader: unreadable, non-UTF-8 or invalid YAML is one line with its place
        data = load_yaml(Path(path))
    except ConfigError as e:
        raise VidsslError(f"suite {e}") from None
    return parse_suite(data, str(path))


# --------------------------------------------------------------------------- running


def metric_value(result: dict[str, Any], key: str) -> float | None:
    """The number at `key` ("a/b" nests) in result["metrics"]; None for a non-finite one (null)."""
    node: Any = result.get("metrics", {})
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            avail = ", ".join(_metric_keys(result.get("metrics", {})))
            raise VidsslError(f"no metric '{key}' in the result; available: {avail}")
        node = node[part]
    if node is None:
        return None
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise VidsslError(f"metric '{key}' is not a number")
    return float(node) if math.isfinite(node) else None


def _metric_keys(metrics: Any, prefix: str = "") -> list[str]:
    """Number-valued keys of a metrics dict, nested ones as a/b (per-sequence lists left out)."""
    out = []
    if isinstance(metrics, dict):
        for k, v in metrics.items():
            if isinstance(v, dict):
                out += _metric_keys(v, f"{prefix}{k}/")
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append(f"{prefix}{k}")
    return out[:20]


def _error_text(e: BaseException) -> str:
    if isinstance(e, VidsslError):
        return one_line(e)
    return one_line(f"{type(e).__name__}: {first_line(e)}")


def run_suite(
    weights: Sequence[str],
    items: Sequence[SuiteItem],
    *,
    suite: str = "suite",
    device: str | None = None,
    seed: int | None = None,
    checkpoint_key: str | None = None,
    cache_dir: str | Path | None = None,
    cache: bool | None = None,
    num_workers: int | None = None,
    progress: bool | None = None,
) -> Report:
    """Run every evaluation for every encoder (encoder by encoder), one progress bar over all the
    cells. The runner's options go to every evaluation that takes them, unless its args set them.
    A cell that raises (any Exception) holds its one-line error; EvalWarnings are kept per cell."""
    weights = [str(w) for w in weights]
    if not weights:
        raise VidsslError("no encoder to evaluate: give --weights at least once")
    dup = sorted({w for w in weights if weights.count(w) > 1})
    if dup:
        raise VidsslError(f"--weights {dup[0]} is given twice")
    common = {k: v for k, v in dict(device=device, seed=seed, checkpoint_key=checkpoint_key, cache_dir=cache_dir,
                                    cache=cache, num_workers=num_workers).items() if v is not None}
    report = Report(suite=str(suite), weights=weights, items=list(items))
    bar = tqdm(total=len(weights) * len(items), desc="suite", unit="eval",
               disable=None if progress is None else not progress)  # None: shown on a terminal only
    try:
        for w in weights:
            for item in items:
                bar.set_postfix_str(f"{item.name} | {w}", refresh=True)
                result, error, caught = _run_cell(w, item, common)
                if error is None:
                    report.results.setdefault(item.name, {})[w] = result
                else:
                    report.errors.setdefault(item.name, {})[w] = error
                if caught:
                    report.warnings.setdefault(item.name, {})[w] = caught
                bar.update(1)
    finally:
        bar.close()
    return report


def _run_cell(weights: str, item: SuiteItem, common: dict[str, Any]) -> tuple[dict | None, str | None, list[str]]:
    kept: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EvalWarning)
        try:
            fn = _function(item.spec())
            accepted = inspect.signature(fn).parameters
            kw = {k: v for k, v in common.items() if k in accepted and k not in item.args}
            result, error = fn(weights, **item.args, **kw), None
        except Exception as e:  # noqa: BLE001 - a failed cell must not stop the suite
            result, error = None, _error_text(e)
    for w in caught:  # shown after the cell, named by it; kept in report.json
        if issubclass(w.category, EvalWarning):
            kept.append(one_line(w.message))
            warn(f"{item.name} | {weights}: {one_line(w.message)}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result, error, kept


# --------------------------------------------------------------------------- writing


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _fmt(v: float | None) -> str:
    return "nan" if v is None else f"{v:.2f}"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def report_markdown(report: Report) -> str:
    rows = report.rows()
    head = ["evaluation", "metric", *report.weights]
    lines = ["# Evaluation report", "",
             f"Suite: `{report.suite}`, {plural(len(report.items), 'evaluation')} x "
             f"{plural(len(report.weights), 'encoder')}"
             f"{f', {report.failed()} failed' if report.failed() else ''}. Best per row in bold.", "",
             "| " + " | ".join(_md_cell(h) for h in head) + " |",
             "|" + "|".join(["---", "---"] + ["---:"] * len(report.weights)) + "|"]
    for r in rows:
        cells = []
        for w in report.weights:
            if w in r["errors"]:
                cells.append(f"error: {r['errors'][w]}")
            elif w in r["best"] and len(report.weights) > 1:
                cells.append(f"**{_fmt(r['values'][w])}**")
            else:
                cells.append(_fmt(r["values"][w]))
        lines.append("| " + " | ".join(_md_cell(c) for c in [r["evaluation"], r["metric"], *cells]) + " |")
    lines += ["", "## Encoders", ""] + [f"- `{w}`" for w in report.weights]
    lines += ["", "## Suite", ""]
    for item in report.items:
        args = ", ".join(f"{k}={v!r}" for k, v in item.args.items())
        lines.append(f"- **{_md_cell(item.name)}**: `{item.eval}`({args}); metrics: {', '.join(item.metrics)}")
    warned = [(n, w, m) for n, per in report.warnings.items() for w, ms in per.items() for m in ms]
    if warned:
        lines += ["", "## Warnings", ""] + [f"- {_md_cell(n)} | `{w}`: {_md_cell(m)}" for n, w, m in warned]
    return "\n".join(lines) + "\n"


def draw_chart(report: Report, path: str | Path) -> Path:
    """Grouped bars: one group per (evaluation, metric), one bar per encoder; a failed or missing
    value has no bar and an 'x' on the axis. Drawn on an Agg canvas (no pyplot state)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = report.rows()
    n_enc = len(report.weights)
    width = 0.8 / n_enc
    fig = Figure(figsize=(max(5.0, 1.1 * len(rows) * max(1, n_enc) ** 0.5 + 2), 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(rows))
    for j, w in enumerate(report.weights):
        pos = x - 0.4 + width * (j + 0.5)
        vals = [r["values"][w] for r in rows]
        ok = [i for i, v in enumerate(vals) if v is not None]
        bars = ax.bar(pos[ok], [vals[i] for i in ok], width * 0.95, label=w, color=f"C{j % 10}")
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
        missing = [i for i, v in enumerate(vals) if v is None]
        if missing:
            ax.plot(pos[missing], [0] * len(missing), "x", color=f"C{j % 10}", markersize=7, clip_on=False)
    ax.set_xticks(x, [f"{r['evaluation']}\n{r['metric']}" if r["metric"] != r["evaluation"] else r["metric"]
                      for r in rows], fontsize=8)
    ax.set_ylabel("score (%)")
    ax.set_ylim(bottom=0)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("evaluation report" + (" (x: failed)" if any(r["errors"] for r in rows) else ""), fontsize=9)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def write_report(report: Report, out: str | Path) -> dict[str, Path]:
    """report.json (every result dict, the errors and the table), report.md and report.png in `out`."""
    out = ensure_dir(out)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "report.png"}
    write_json(paths["json"], report.to_json(), indent=2)
    write_text(paths["md"], report_markdown(report))
    draw_chart(report, paths["png"])
    return paths


def evaluate_suite(
    weights: Sequence[str], suite: str | Path | list, out: str | Path | None = None, **options: Any
) -> dict[str, Any]:
    """Run a suite (a YAML path, or its parsed list) for every weights string, write the report to
    `out` when given, and return report.json's dict. `options`: those of `run_suite`."""
    items = parse_suite(suite, "suite") if isinstance(suite, list) else load_suite(suite)
    report = run_suite(weights, items, suite="<list>" if isinstance(suite, list) else str(suite), **options)
    if out is not None:
        write_report(report, out)
    return report.to_json()
