"""`gmemtest series apply|walk` and `gmemtest diff`: a posted series, and two kernels compared."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from gmemtest.results.answer import Answer

from . import options


def _cmd_series_apply(args: argparse.Namespace) -> Answer:
    from gmemtest.vmtier import kernel

    spec = options.posted(args)
    s = spec.source.series
    tree = kernel.series_tree(spec)
    return Answer(0, "\n".join([
        f"series: {s.title()}", f"tree:   {tree.path} (base {tree.base})",
        *(f"  {i:2d}/{s.count} {sha[:12]} {subject}"
          for i, (sha, subject) in enumerate(tree.commits(), 1)),
        f"bisect: cd {tree.path} && git bisect start HEAD HEAD~{s.count} && git bisect run "
        "gmemtest bisect-step -- TESTS"]))


def _cmd_series_walk(args: argparse.Namespace) -> Answer:
    from gmemtest.workflows import walk

    return walk.main(options.posted(args), args.pytest_args or None, options.limits(args),
                     coverage=args.coverage)


def _cmd_diff(args: argparse.Namespace) -> Answer:
    from gmemtest.vmtier import kernelspec
    from gmemtest.workflows import diff, vmtest

    a = kernelspec.from_word(args.a, args.base)  # both sides checked before anything is built
    b = kernelspec.from_word(args.b, args.base)
    out = Path(args.out) if args.out else \
        vmtest.results_root() / time.strftime("diff-%Y%m%d-%H%M%S")
    return diff.main(args.a, a, args.b, b, args.pytest_args or None, options.limits(args),
                     out, coverage=args.coverage)


def add(sub: Any) -> None:
    """Its commands, on the command line."""
    se = sub.add_parser("series", help="a posted series (an mbox): apply it, or walk it as the "
                        "0-day bot does")
    ses = se.add_subparsers(dest="series_command", required=True, metavar="apply|walk")
    sa = ses.add_parser("apply", help="apply the series with git am onto the base, one commit "
                        "per patch, and print the tree (for git bisect run bisect-step)")
    sw = ses.add_parser("walk", help="build every prefix, run the suite at the tip in both "
                        "modes, bisect to the first bad patch when the tip fails")
    for x in (sa, sw):
        x.add_argument("mbox", metavar="MBOX", help="the posted series, as an mbox")
        x.add_argument("--series-version", type=int, metavar="N",
                       help="the version to take (default: the newest in the mbox)")
        x.add_argument("--src", metavar="DIR", help="the base tree (default: Debian's "
                       "linux-source, see --base)")
        x.add_argument("--base", metavar="X.Y", default=None, help=options.BASE_HELP)
    sa.set_defaults(func=_cmd_series_apply)
    sw.add_argument("--debug", action="store_true", help="add the debug kconfig fragment")
    sw.add_argument("--coverage", action="store_true", help="also boot the tip's coverage "
                    "build and draw the series' lines each test ran (coverage/ of the report)")
    options.add_vm_limits(sw)
    sw.set_defaults(func=_cmd_series_walk)

    d = sub.add_parser("diff", help="the same suite on two kernels, both modes: every test "
                       "whose outcome differs")
    d.add_argument("a", metavar="A", help="a built kernel (build dir or bzImage), a patch "
                   "directory, a series mbox, a kernel tree, or kpatches[:FORM]")
    d.add_argument("b", metavar="B", help="the same, to compare with A")
    d.add_argument("--out", metavar="DIR", help="report directory (default results/diff-*)")
    d.add_argument("--base", metavar="X.Y", default=None,
                   help=options.BASE_HELP + "; for kpatches, patch directories and mboxes")
    d.add_argument("--coverage", action="store_true", help="boot each side's coverage build "
                   "(the suite one test at a time) and compare what each side's tests ran")
    options.add_vm_limits(d)
    d.set_defaults(func=_cmd_diff)

