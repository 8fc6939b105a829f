"""The `gmemtest` command. Every failure ends in one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from gmemtest.kvm import seriesconf

from .errors import GmemtestError, KvmError, one_line


def _cmd_caps(args: argparse.Namespace) -> int:
    from . import caps

    report = caps.collect(args.kvm, args.gmem_attr_cap)
    print(json.dumps(report, indent=2) if args.json else caps.render(report))
    return 1 if "error" in report else 0


def _cmd_abi_check(args: argparse.Namespace) -> int:
    from . import abi

    headers = Path(args.headers) if args.headers else None
    src = Path(args.kernel_src) if args.kernel_src else None
    for p in (headers, src):
        if p is not None and not p.is_dir():
            raise GmemtestError(f"{p} is not a directory")
    dirs = abi.include_dirs(headers, src)
    results = abi.check(dirs, headers or src)
    print(abi.report(results, show_all=args.all))
    return 1 if any(r.status == "drift" for r in results) else 0


def _limits(args: argparse.Namespace) -> Any:
    from gmemtest.vmtier.qemu import Limits

    return Limits(boot=args.boot_timeout, test=args.test_timeout, total=args.timeout,
                  silence=args.silence)


def _pytest_args(args: argparse.Namespace) -> list[str]:
    rest = list(args.pytest_args)
    return rest[1:] if rest[:1] == ["--"] else rest


def _source(args: argparse.Namespace) -> tuple[Path | None, bool | None]:
    """The tree to build and whether kpatches/ go on it: --series makes a tree of the posted
    series on its base (--src, else Debian's); else --src as it is."""
    src = Path(args.src) if args.src else None
    if src is not None and not src.is_dir():
        raise GmemtestError(f"--src {src}: no such directory")
    if getattr(args, "series", None):
        from gmemtest.vmtier import series

        return series.tree(Path(args.series), version=args.series_version, src=src), False
    if getattr(args, "series_version", None) is not None:
        raise GmemtestError("--series-version needs --series MBOX")
    return src, args.patches


def _patch_dir(args: argparse.Namespace) -> Path:
    """--patch-dir (which implies --patches), else kpatches/."""
    from gmemtest.vmtier import checkout

    if args.patch_dir is None:
        return checkout.KPATCHES
    d = Path(args.patch_dir)
    if not (d / "series").is_file():
        raise GmemtestError(f"--patch-dir {d}: no series file there")
    if args.patches is None:
        args.patches = True
    return d


def _cmd_kernel_build(args: argparse.Namespace) -> int:
    from gmemtest.vmtier import kernel

    fragments = [*args.fragment] or None
    if args.debug:
        from gmemtest.vmtier.kconfig import DEFAULT_FRAGMENTS

        fragments = [*(fragments or DEFAULT_FRAGMENTS), "debug"]
    src, patches = _source(args)
    b = kernel.build(src, patches=patches, fragments=fragments, jobs=args.jobs,
                     patch_dir=_patch_dir(args), build_dir=_build_dir(args))
    print(kernel.summary(b))
    return 0


def _build_dir(args: argparse.Namespace) -> Path | None:
    return Path(args.build_dir) if args.build_dir else None


def _cmd_kernel_selftests(args: argparse.Namespace) -> int:
    from gmemtest.vmtier import kernel

    src, patches = _source(args)
    b = kernel.build(src, patches=patches, patch_dir=_patch_dir(args))
    print(kernel.selftests(b))
    return 0


def _cmd_vm_run(args: argparse.Namespace) -> int:
    from gmemtest.results import report
    from gmemtest.vmtier import qemu
    from gmemtest.workflows import vmtest

    kimage = Path(args.kernel)
    results = Path(args.results) if args.results else \
        vmtest.results_root() / time.strftime("run-%Y%m%d-%H%M%S")
    headers = args.headers or qemu.build_headers(kimage)
    env = {seriesconf.ENV_HEADERS: str(headers)} if headers else {}
    if args.selftests:
        env["GMEMTEST_SELFTESTS"] = str(Path(args.selftests).resolve())
    image = _image(args)
    run = qemu.boot(kimage, _pytest_args(args), results=results, cmdline=args.cmdline,
                    limits=_limits(args), env=env, image=image, memory=args.memory)
    outcome = report.evaluate("run", run)
    print(report.summary([outcome]))
    if outcome.problem:
        raise GmemtestError(outcome.problem)
    return 0 if outcome.ok else 1


def _image(args: argparse.Namespace) -> Path | None:
    """--image: a root image directory, or 'debian' for the cached vmimages build."""
    if not args.image:
        return None
    if args.image == "debian":
        from gmemtest.vmtier import vmimage

        return vmimage.build()
    image = Path(args.image)
    if not (image / "bin").exists():
        raise GmemtestError(f"--image {image}: not a root directory (build one with "
                            "`gmemtest vm image`)")
    return image


def _cmd_vm_image(args: argparse.Namespace) -> int:
    from gmemtest.vmtier import vmimage

    root = vmimage.build()
    print(root)
    print((root / "gmemtest-image.json").read_text().strip())
    return 0


def _cmd_vm_test(args: argparse.Namespace) -> int:
    from gmemtest.vmtier.kconfig import DEFAULT_FRAGMENTS
    from gmemtest.workflows import vmtest

    fragments = [*DEFAULT_FRAGMENTS, "debug"] if args.debug else None
    patch_dir = _patch_dir(args)
    src, patches = _source(args)
    outcomes, text = vmtest.main_job(src=src, patches=patches, patch_dir=patch_dir,
                                     fragments=fragments,
                                     pytest_args=_pytest_args(args) or None,
                                     limits=_limits(args), image=_image(args))
    print(text)
    return 0 if all(o.ok for o in outcomes) else 1


def _cmd_bisect_step(args: argparse.Namespace) -> int:
    from gmemtest.vmtier import qemu
    from gmemtest.workflows import bisect

    src = Path(args.src or ".").resolve()
    if not (src / "Makefile").is_file():
        fail("bisect-step", f"{src} is not a kernel tree: run it from the tree or pass --src DIR")
        return bisect.ABORT
    pytest_args = _pytest_args(args) or ["-q", *qemu.parallelism()]
    if args.k:
        pytest_args = ["-k", args.k, *pytest_args]
    try:
        return bisect.step(src, pytest_args, cmdline=args.cmdline, limits=_limits(args),
                           on_build_failure=args.build_failure,
                           on_boot_failure=args.boot_failure, build_dir=_build_dir(args))
    except (GmemtestError, KvmError, OSError) as e:
        fail("bisect-step", e)
        return bisect.ABORT


def _cmd_matrix(args: argparse.Namespace) -> int:
    from gmemtest.workflows import matrix

    return matrix.main(Path(args.config), Path(args.out) if args.out else None,
                       Path(args.baseline) if args.baseline else None, _limits(args),
                       _pytest_args(args) or None, cell=args.cell, list_cells=args.list,
                       kcidb_file=Path(args.kcidb) if args.kcidb else None)


def _cmd_series_apply(args: argparse.Namespace) -> int:
    from gmemtest.vmtier import series
    from gmemtest.vmtier.progress import Progress

    src = Path(args.src) if args.src else None
    s = series.read(Path(args.mbox), args.series_version)
    tree = series.apply(s, src, Progress())
    print(f"series: {s.title()}")
    print(f"tree:   {tree} (base {series.info(tree)['base']})")
    for i, (sha, subject) in enumerate(series.commits(tree, s.count), 1):
        print(f"  {i:2d}/{s.count} {sha[:12]} {subject}")
    print(f"bisect: cd {tree} && git bisect start HEAD HEAD~{s.count} && git bisect run "
          "gmemtest bisect-step -k TESTS")
    return 0


def _cmd_series_walk(args: argparse.Namespace) -> int:
    from gmemtest.vmtier.kconfig import DEFAULT_FRAGMENTS
    from gmemtest.workflows import walk

    return walk.main(Path(args.mbox), version=args.series_version,
                     src=Path(args.src) if args.src else None,
                     fragments=[*DEFAULT_FRAGMENTS, "debug"] if args.debug else None,
                     pytest_args=_pytest_args(args) or None, limits=_limits(args))


def _cmd_diff(args: argparse.Namespace) -> int:
    from gmemtest.workflows import diff

    return diff.main(args.a, args.b, _pytest_args(args) or None, _limits(args),
                     Path(args.out) if args.out else None)


def _cmd_matrix_merge(args: argparse.Namespace) -> int:
    from gmemtest.workflows import matrix

    return matrix.merge_main([Path(d) for d in args.dirs], Path(args.config), Path(args.out),
                             Path(args.baseline) if args.baseline else None,
                             Path(args.kcidb) if args.kcidb else None)


def _cmd_bench(args: argparse.Namespace) -> int:
    from gmemtest.workflows import bench

    src, patches = _source(args)
    return bench.main(src=src, patches=patches, cmdline=args.cmdline or
                      ["kvm.gmem_in_place_conversion=0"], seconds=args.seconds, cold=args.cold,
                      out=Path(args.out) if args.out else None, limits=_limits(args))


def _add_vm_limits(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", metavar="DIR|debian",
                   help="boot a root image directory instead of sharing the host root "
                   "('debian': the one `gmemtest vm image` builds)")
    p.add_argument("--boot-timeout", type=float, default=60, metavar="S",
                   help="seconds from QEMU start to the guest init's banner (default 60)")
    p.add_argument("--test-timeout", type=float, default=300, metavar="S",
                   help="seconds per test, enforced in the guest (default 300)")
    p.add_argument("--timeout", type=float, default=1800, metavar="S",
                   help="seconds for the whole boot (default 1800)")
    p.add_argument("--silence", type=float, default=150, metavar="S",
                   help="seconds without console output after which the guest counts as hung "
                   "and is made to dump its tasks (default 150)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER,
                   help="-- then the arguments for pytest in the guest")


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--src", metavar="DIR",
                   help="kernel tree to build (default: Debian's linux-source-7.2); with "
                   "--series, the base to apply it onto")
    p.add_argument("--series", metavar="MBOX",
                   help="a posted series (an mbox, as `b4 am -o -` or a list archive writes "
                   "it), applied with git am onto the base")
    p.add_argument("--series-version", type=int, metavar="N",
                   help="the version of the series to take from the mbox (default: newest)")
    p.add_argument("--patches", action=argparse.BooleanOptionalAction, default=None,
                   help="apply kpatches/ (default: on for the Debian source, off for --src)")
    p.add_argument("--patch-dir", metavar="DIR", default=None,
                   help="apply this series (a dir with a series file) instead of kpatches/")


def _add_build_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--build-dir", metavar="DIR",
                   help="build there (default: the cache; a subdirectory of the tree lets ccache "
                   "share objects with other trees built that way)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gmemtest", description=__doc__)
    p.add_argument("--gmem-attr-cap", type=lambda s: int(s, 0), default=None,
                   help=f"number of {seriesconf.CAP_NAME} (default: from --kernel-headers or "
                   f"${seriesconf.ENV_HEADERS}, else {seriesconf.V8_DEFAULT}, the v8 posting's)")
    p.add_argument("--kernel-headers", default=None, metavar="DIR",
                   help="kernel tree or installed uapi headers of the kernel under test")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("caps", help="what the running kernel's KVM offers")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_argument("--kvm", default="/dev/kvm", help="KVM device (default /dev/kvm)")
    c.set_defaults(func=_cmd_caps)

    a = sub.add_parser("abi-check", help="compare gmemtest's uAPI with a kernel's headers")
    g = a.add_mutually_exclusive_group(required=True)
    g.add_argument("--headers", metavar="DIR", help="installed uapi headers (headers_install)")
    g.add_argument("--kernel-src", metavar="DIR", help="a kernel source tree")
    a.add_argument("--all", action="store_true", help="show every item, not only drift")
    a.set_defaults(func=_cmd_abi_check)

    k = sub.add_parser("kernel", help="kernel source and builds")
    ksub = k.add_subparsers(dest="kernel_command", required=True)
    kb = ksub.add_parser("build", help="fetch/patch/configure/build bzImage and uapi headers")
    _add_source(kb)
    kb.add_argument("--fragment", action="append", default=[], metavar="NAME",
                    help="kconfigs/NAME.config to merge (repeatable; default base kvm mm faults)")
    kb.add_argument("--debug", action="store_true", help="add the debug fragment (KASAN, ...)")
    kb.add_argument("-j", "--jobs", type=int, default=None, help="make -j (default: cores)")
    _add_build_dir(kb)
    kb.set_defaults(func=_cmd_kernel_build)
    ks = ksub.add_parser("selftests", help="build the upstream KVM selftests of the kernel")
    _add_source(ks)
    ks.set_defaults(func=_cmd_kernel_selftests)

    v = sub.add_parser("vm", help="boot a kernel under QEMU and run the suite in it")
    vsub = v.add_subparsers(dest="vm_command", required=True)
    vr = vsub.add_parser("run", help="one boot: gmemtest vm run --kernel BZIMAGE -- PYTEST_ARGS")
    vr.add_argument("--kernel", required=True, metavar="PATH", help="bzImage to boot")
    vr.add_argument("--cmdline", action="append", default=[], metavar="ARG",
                    help="extra kernel command line argument (repeatable)")
    vr.add_argument("--headers", metavar="DIR", help="the kernel's installed uapi headers")
    vr.add_argument("--results", metavar="DIR", help="results directory (default results/run-*)")
    vr.add_argument("--memory", default="3G", metavar="SIZE",
                    help="guest RAM, as QEMU's -m takes it (default 3G)")
    vr.add_argument("--selftests", metavar="DIR",
                    help="KVM selftests dir for vmimages/selftests ($GMEMTEST_SELFTESTS)")
    _add_vm_limits(vr)
    vr.set_defaults(func=_cmd_vm_run)

    vi = vsub.add_parser("image", help="build (or find) the self-contained Debian root image")
    vi.set_defaults(func=_cmd_vm_image)

    b = sub.add_parser("bisect-step", help="one step of `git bisect run`: build, boot, test; "
                       "exit 0 good, 1 bad, 125 skip, 128 abort")
    b.add_argument("--src", metavar="DIR", help="the kernel tree (default: the current dir)")
    b.add_argument("-k", metavar="EXPR", help="pytest -k expression selecting the tests")
    b.add_argument("--cmdline", action="append", default=["kvm.gmem_in_place_conversion=1"],
                   metavar="ARG", help="kernel command line argument (default: in-place "
                   "conversion on)")
    b.add_argument("--build-failure", choices=("skip", "bad", "abort"), default="skip",
                   help="answer for a commit that does not build (default skip: 125)")
    b.add_argument("--boot-failure", choices=("skip", "bad", "abort"), default="skip",
                   help="answer for a commit that does not boot (default skip: 125)")
    _add_build_dir(b)
    _add_vm_limits(b)
    b.set_defaults(func=_cmd_bisect_step)

    m = sub.add_parser("matrix", help="the nightly job: kernels x kconfig sets x command lines, "
                       "one report (JUnit, KTAP, Markdown, HTML)")
    m.add_argument("--config", required=True, metavar="FILE", help="the matrix (TOML; see "
                   "matrices/nightly.toml)")
    m.add_argument("--out", metavar="DIR", help="report directory (default results/matrix-*)")
    m.add_argument("--baseline", metavar="FILE", help="an earlier run's matrix.json: exit "
                   "non-zero only when something regressed against it")
    m.add_argument("--list", action="store_true", help="print every cell with its id, as "
                   "JSON, and exit (a CI engine makes a job of each)")
    m.add_argument("--cell", metavar="ID", help="build, boot and run this cell alone into "
                   "OUT/cells/SLUG; `gmemtest matrix merge` makes the reports")
    m.add_argument("--kcidb", metavar="FILE", help="also write the results as KCIDB JSON")
    _add_vm_limits(m)
    m.set_defaults(func=_cmd_matrix)

    se = sub.add_parser("series", help="a posted series (an mbox): apply it, or walk it as the "
                        "0-day bot does")
    ses = se.add_subparsers(dest="series_command", required=True)
    sa = ses.add_parser("apply", help="apply the series with git am onto the base, one commit "
                        "per patch, and print the tree (for git bisect run bisect-step)")
    sw = ses.add_parser("walk", help="build every prefix, run the suite at the tip in both "
                        "modes, bisect to the first bad patch when the tip fails")
    for x in (sa, sw):
        x.add_argument("mbox", metavar="MBOX", help="the posted series, as an mbox")
        x.add_argument("--series-version", type=int, metavar="N",
                       help="the version to take (default: the newest in the mbox)")
        x.add_argument("--src", metavar="DIR", help="the base tree (default: Debian's "
                       "linux-source-7.2)")
    sa.set_defaults(func=_cmd_series_apply)
    sw.add_argument("--debug", action="store_true", help="add the debug kconfig fragment")
    _add_vm_limits(sw)
    sw.set_defaults(func=_cmd_series_walk)

    d = sub.add_parser("diff", help="the same suite on two kernels, both modes: every test "
                       "whose outcome differs")
    d.add_argument("a", metavar="A", help="a built kernel (build dir or bzImage), a patch "
                   "directory, a series mbox or a kernel tree")
    d.add_argument("b", metavar="B", help="the same, to compare with A")
    d.add_argument("--out", metavar="DIR", help="report directory (default results/diff-*)")
    _add_vm_limits(d)
    d.set_defaults(func=_cmd_diff)

    mm = sub.add_parser("matrix-merge", prog="gmemtest matrix merge",
                        help="(as `gmemtest matrix merge DIR...`) the reports of cells run "
                        "apart, as one run of them would write")
    mm.add_argument("dirs", nargs="+", metavar="DIR", help="a cell's results directory "
                    "(OUT/cells/SLUG of `--cell`), or an OUT holding cells/")
    mm.add_argument("--config", required=True, metavar="FILE", help="the matrix they come from")
    mm.add_argument("--out", required=True, metavar="DIR", help="report directory")
    mm.add_argument("--baseline", metavar="FILE", help="an earlier run's matrix.json")
    mm.add_argument("--kcidb", metavar="FILE", help="also write the results as KCIDB JSON")
    mm.set_defaults(func=_cmd_matrix_merge)

    be = sub.add_parser("bench", help="gmemtest against the upstream KVM selftests, and "
                        "micro-benchmarks, in one boot")
    _add_source(be)
    be.add_argument("--cmdline", action="append", default=[], metavar="ARG",
                    help="kernel command line (default kvm.gmem_in_place_conversion=0, where "
                    "every upstream selftest passes)")
    be.add_argument("--seconds", type=float, default=1.0,
                    help="time per micro-benchmark (default 1)")
    be.add_argument("--cold", action="store_true",
                    help="also time a cold kernel build (fresh directory, ccache off)")
    be.add_argument("--out", metavar="DIR", help="report directory (default results/bench-*)")
    _add_vm_limits(be)
    be.set_defaults(func=_cmd_bench)

    t = sub.add_parser("vm-test", help="the main job: build, boot twice (in-place conversion "
                       "on and off), run the whole suite, one report")
    _add_source(t)
    t.add_argument("--debug", action="store_true", help="add the debug kconfig fragment")
    _add_vm_limits(t)
    t.set_defaults(func=_cmd_vm_test)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["matrix", "merge"]:
        argv[:2] = ["matrix-merge"]
    args = parser().parse_args(argv)
    if args.kernel_headers:
        os.environ[seriesconf.ENV_HEADERS] = args.kernel_headers
    try:
        return int(args.func(args))
    except (GmemtestError, OSError) as e:  # KvmError is an OSError
        fail(args.command, e)
        return 2
    except KeyboardInterrupt:
        print(f"gmemtest {args.command}: interrupted", file=sys.stderr)
        return 130


def fail(command: str, e: BaseException | str) -> None:
    """Every failure of a command, in one line on stderr: what went wrong and what to do."""
    text = e if isinstance(e, str) else one_line(e)
    print(f"gmemtest {command.replace('matrix-merge', 'matrix merge')}: error: {text}",
          file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
