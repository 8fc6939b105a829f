"""`gmemtest bench`: gmemtest against the upstream selftests, and its figures against their
targets."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gmemtest.results.answer import Answer

from . import options


def _cmd_bench(args: argparse.Namespace) -> Answer:
    from gmemtest.workflows import bench

    return bench.main(options.spec(args),
                      cmdline=args.cmdline or ["kvm.gmem_in_place_conversion=0"],
                      seconds=args.seconds, cold=args.cold,
                      out=Path(args.out) if args.out else None, limits=options.limits(args),
                      edit_loop_only=args.edit_loop)


def add(sub: Any) -> None:
    """Its commands, on the command line."""
    be = sub.add_parser("bench", help="gmemtest against the upstream KVM selftests, and "
                        "micro-benchmarks, in one boot")
    options.add_source(be)
    be.add_argument("--cmdline", action="append", default=[], metavar="ARG",
                    help="kernel command line (default kvm.gmem_in_place_conversion=0, where "
                    "every upstream selftest passes)")
    be.add_argument("--seconds", type=options.seconds, default=1.0,
                    help="time per micro-benchmark (default 1)")
    be.add_argument("--cold", action="store_true",
                    help="also time a cold kernel build (fresh directory, ccache off)")
    be.add_argument("--edit-loop", action="store_true",
                    help="only the edit loop: edit one function, the covering tests' verdict "
                    "next to the whole suite's")
    be.add_argument("--out", metavar="DIR", help="report directory (default results/bench-*)")
    options.add_vm_limits(be)
    be.set_defaults(func=_cmd_bench)

