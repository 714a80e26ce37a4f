"""The ``scratchlm`` command (also ``python -m scratchlm``).

Subcommands:
    gradcheck   check every functional op and model backward against finite differences
"""

from __future__ import annotations

import argparse
import sys


def _cmd_gradcheck(args) -> int:
    from scratchlm.gradcheck import check_functional, check_models  # noqa: PLC0415

    rows = []
    if args.only in (None, "ops"):
        rows += check_functional(seed=args.seed, rtol=args.rtol)
    if args.only in (None, "models"):
        rows += check_models(seed=args.seed, rtol=args.model_rtol)
    print(f"{'op / model':<34} {'shapes':<40} {'max rel err':>12} {'max abs err':>12}  result")
    print("-" * 110)
    failed = 0
    for op, shapes, report in rows:
        failed += not report.passed
        print(f"{op:<34} {shapes:<40} {report.max_rel_err:12.2e} "
              f"{report.max_abs_err:12.2e}  {'pass' if report.passed else 'FAIL'}")
        if args.verbose or not report.passed:
            print("    " + str(report).replace("\n", "\n    "))
    print("-" * 110)
    print(f"{len(rows) - failed} passed, {failed} failed (float64, central differences; "
          f"ops element-wise or directional, pass at relative error <= {args.rtol:g}; "
          f"models per parameter along random directions, <= {args.model_rtol:g})")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scratchlm",
        description="Transformer language models from scratch in NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("gradcheck", help="check every backward against finite differences",
                       description="Check every functional op's and every model's backward "
                                   "against central finite differences in float64 and print "
                                   "a table; exit code 1 if any fails.")
    p.add_argument("--seed", type=int, default=0, help="seed for inputs and directions")
    p.add_argument("--rtol", type=float, default=1e-6,
                   help="largest normwise relative error that passes (default 1e-6)")
    p.add_argument("--model-rtol", type=float, default=1e-5,
                   help="largest relative error that passes for whole models (default 1e-5)")
    p.add_argument("--only", choices=["ops", "models"], help="check only ops or only models")
    p.add_argument("-v", "--verbose", action="store_true", help="show per-input errors")
    p.set_defaults(func=_cmd_gradcheck)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, TypeError, RuntimeError, FileNotFoundError) as exc:
        print(f"scratchlm {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
