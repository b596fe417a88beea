"""`vidssl eval track`: GOT-10k single-object tracking with a training-free tracker on frozen patch
features, AO / SR0.5 / SR0.75 (vidssl.eval.track)."""

from __future__ import annotations

import argparse

from vidssl.cli.evaluate import add_common_options, encoder_options, format_number


def register(subparsers: argparse._SubParsersAction) -> None:
    from vidssl.eval.track import TrackParams

    d = TrackParams()
    p = subparsers.add_parser("track", help="GOT-10k tracking with a training-free patch-feature tracker, AO/SR",
                              description="Single-object tracking on the GOT-10k layout: a template of patch features "
                                          "from the first box, correlation over a search window, a 3-scale search "
                                          "and a confidence-gated template update; scored as the GOT-10k toolkit "
                                          "does (AO, SR0.5, SR0.75).")
    add_common_options(p, cache=False)
    p.add_argument("--data", required=True, metavar="DIR",
                   help="GOT-10k root (with val/ or --split) or one split folder: SEQUENCE/00000001.jpg... and "
                        "SEQUENCE/groundtruth.txt (x,y,w,h per line), optional list.txt")
    p.add_argument("--split", help="split folder under DIR (e.g. val, test); default: DIR itself if it holds "
                                   "sequences, else DIR/val")
    p.add_argument("--out", metavar="DIR", help="write the toolkit's result files DIR/SEQ/SEQ_001.txt and SEQ_time.txt")
    p.add_argument("--sequences", nargs="+", action="extend", metavar="NAME", help="track only these sequences")
    p.add_argument("--box-patches", type=float, default=d.box_patches,
                   help=f"the target's side in the encoder's input, in patches (default {d.box_patches:g})")
    p.add_argument("--search-factor", type=float, default=d.search_factor,
                   help=f"search window side / target side (default {d.search_factor:g})")
    p.add_argument("--template-context", type=float, default=d.template_context,
                   help=f"context added to the template box, x sqrt(w*h) (default {d.template_context:g})")
    p.add_argument("--num-scales", type=int, default=d.num_scales, help=f"scales searched, odd (default {d.num_scales})")
    p.add_argument("--scale-step", type=float, default=d.scale_step, help=f"ratio between scales (default {d.scale_step:g})")
    p.add_argument("--scale-penalty", type=float, default=d.scale_penalty,
                   help=f"score factor of a scale change (default {d.scale_penalty:g})")
    p.add_argument("--scale-lr", type=float, default=d.scale_lr, help=f"size update rate (default {d.scale_lr:g})")
    p.add_argument("--window-influence", type=float, default=d.window_influence,
                   help=f"weight of the Hann motion prior on the response (default {d.window_influence:g})")
    p.add_argument("--response-upsample", type=int, default=d.response_upsample,
                   help=f"response upsampling for sub-patch peaks (default {d.response_upsample})")
    p.add_argument("--update-threshold", type=float, default=d.update_threshold,
                   help=f"update the template when the peak's mean cosine is at least this (default {d.update_threshold:g})")
    p.add_argument("--update-rate", type=float, default=d.update_rate,
                   help=f"EMA rate of the template update; 0 keeps the first template (default {d.update_rate:g})")
    p.set_defaults(func=run_track)


def run_track(args: argparse.Namespace) -> int:
    from vidssl.eval.report import finish, one_line_warnings
    from vidssl.eval.track import evaluate_track

    options = dict(box_patches=args.box_patches, search_factor=args.search_factor,
                   template_context=args.template_context, num_scales=args.num_scales, scale_step=args.scale_step,
                   scale_penalty=args.scale_penalty, scale_lr=args.scale_lr, window_influence=args.window_influence,
                   response_upsample=args.response_upsample, update_threshold=args.update_threshold,
                   update_rate=args.update_rate)
    with one_line_warnings():
        result = evaluate_track(args.weights, args.data, split=args.split, out=args.out, sequences=args.sequences,
                                **options, **encoder_options(args))
    m = result["metrics"]
    unscored = f", {len(m['unscored_sequences'])} unscored" if m["unscored_sequences"] else ""
    written = f"; results in {args.out}" if args.out else ""
    finish(result, f"track {args.weights}: AO={format_number(m['AO'])} SR0.5={format_number(m['SR0.5'])} SR0.75={format_number(m['SR0.75'])} "
                   f"({m['sequences']} sequences, {m.get('frames', 0)} frames{unscored}){written}", args.json)
    return 0
