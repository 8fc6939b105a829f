"""`gmemtest kernel build|selftests|show` and `gmemtest kpatches check|range-diff|export`: the
kernel under test, and the project's patches."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gmemtest.errors import GmemtestError
from gmemtest.results.answer import Answer

from . import UsageError, options


def _cmd_kernel_build(args: argparse.Namespace) -> Answer:
    from gmemtest.vmtier import kernel

    b = kernel.resolve(options.spec(args), jobs=args.jobs)
    return Answer(0, kernel.summary(b))


def _cmd_kernel_selftests(args: argparse.Namespace) -> Answer:
    from gmemtest.vmtier import kernel

    listing = kernel.resolve(options.spec(args)).kselftests
    if listing is None:
        raise GmemtestError("the kernel's build has no selftests (a kernel built elsewhere)")
    return Answer(0, "\n".join(f"{listing.binary(p)}"
                                + (f"  needs {' '.join(p.needs)}" if p.needs else "")
                                + (f"  {p.error}" if p.error else "")
                                for p in listing.programs))


def _cmd_kpatches_check(args: argparse.Namespace) -> Answer:
    from gmemtest.vmtier import kpatches

    found = kpatches.problems()
    if found:
        return Answer(1, "\n".join([*found, f"{len(found)} problem(s) in kpatches/: it is kept "
                                   "as gmemtest/vmtier/kpatches.py says"]))
    return Answer(0, f"kpatches/: {', '.join(kpatches.bases())} kept as they should be")


def _cmd_kpatches_range_diff(args: argparse.Namespace) -> Answer:
    from gmemtest.vmtier import kernel, kernelspec, kpatches

    have = kpatches.bases()
    for b in (args.older, args.newer):  # before any source is fetched
        if b not in have:
            raise UsageError(f"{b}: kpatches/ has no patches for it (it has {', '.join(have)})")
    if have.index(args.older) >= have.index(args.newer):
        raise UsageError(f"{args.older} {args.newer}: the older base first")
    sources = {b: kernel.prepare(kernelspec.from_options(base=b, patches=False))
               for b in (args.older, args.newer)}
    return Answer(0, str(kpatches.range_diff(args.older, args.newer, sources)))


def _cmd_kpatches_export(args: argparse.Namespace) -> Answer:
    from gmemtest.vmtier import kernelspec, kpatches, series

    tree = kernelspec.tree(Path(args.tree), "--from")
    count = args.count
    if count is None:
        applied = series.info(tree.path)
        if applied is None:
            raise GmemtestError(f"--from {args.tree}: not a series tree: say how many of its "
                                "last commits are the series with --count N")
        count = applied.posted.count
    done = kpatches.export(tree.path, count, args.base)
    return Answer(0, "\n".join([*(f"wrote   {p}" for p in done.written),
                                 *(f"removed {p}" for p in done.removed)]))


def _cmd_kernel_show(args: argparse.Namespace) -> Answer:
    """What a spec names, checked, without building it."""
    from gmemtest.vmtier import kernelspec

    specs = [kernelspec.from_word(w, args.base) for w in args.words] if args.words \
        else [options.spec(args)]
    lines = []
    for spec in specs:
        source = getattr(spec.source, "onto", spec.source)
        if isinstance(source, kernelspec.Debian) and source.fallback:
            lines.append(f"base: {source.fallback}")
        lines.append(spec.label())
    return Answer(0, "\n".join(lines))


def add(sub: Any) -> None:
    """Its commands, on the command line."""
    k = sub.add_parser("kernel", help="kernel source and builds")
    ksub = k.add_subparsers(dest="kernel_command", required=True, metavar="build|selftests|show")
    kb = ksub.add_parser("build", help="fetch/patch/configure/build bzImage and uapi headers")
    options.add_source(kb)
    options.add_fragments(kb)
    kb.add_argument("-j", "--jobs", type=int, default=None, help="make -j (default: cores)")
    options.add_build_dir(kb)
    kb.set_defaults(func=_cmd_kernel_build)
    ks = ksub.add_parser("selftests", help="build the kernel tree's guest_memfd "
                              "selftests (every build does) and list them")
    options.add_source(ks)
    ks.set_defaults(func=_cmd_kernel_selftests)
    kshow = ksub.add_parser("show", help="check and name a kernel under test without building "
                            "it (the options of kernel build, or diff's words)")
    options.add_source(kshow)
    kshow.add_argument("--fragment", action="append", default=[], metavar="NAME")
    kshow.add_argument("--debug", action="store_true")
    kshow.add_argument("words", nargs="*", metavar="WORD",
                       help="as diff takes them: a build, a bzImage, a patch dir, an mbox, a "
                       "tree, kpatches[:FORM]")
    kshow.set_defaults(func=_cmd_kernel_show)

    kp = sub.add_parser("kpatches", help="kpatches/, the project's patches per Debian base, "
                        "kept as the stable queue keeps its patches")
    kpsub = kp.add_subparsers(dest="kpatches_command", required=True,
                              metavar="check|range-diff|export")
    kpsub.add_parser("check", help="every patch named after its subject, in the kept form, "
                     "the same in every base or saying what its port changed; the range-diffs "
                     "current (make lint runs it)").set_defaults(func=_cmd_kpatches_check)
    kr = kpsub.add_parser("range-diff", help="make kpatches/OLDER..NEWER.range-diff again: "
                          "git range-diff of the two bases' series")
    kr.add_argument("older", metavar="OLDER", help="the older base (X.Y)")
    kr.add_argument("newer", metavar="NEWER", help="the newer base (X.Y)")
    kr.set_defaults(func=_cmd_kpatches_range_diff)
    ke = kpsub.add_parser("export", help="write kpatches/BASE from a branch: its last commits "
                          "as patches in the kept form, the series file's names with them")
    ke.add_argument("base", metavar="BASE", help="the base (X.Y) whose patches to write")
    ke.add_argument("--from", dest="tree", required=True, metavar="TREE",
                    help="a kernel tree whose last commits are the series (a series tree "
                    "knows how many)")
    ke.add_argument("--count", type=options.count, metavar="N", help="how many of its last commits")
    ke.set_defaults(func=_cmd_kpatches_export)

