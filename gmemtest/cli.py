"""The `gmemtest` command: the boundary where what the user typed becomes typed values.

Every failure ends in one line on stderr and a non-zero exit: usage errors (2), failures of the
tool or its inputs (2), anything unexpected (2, the traceback written to a log file the line
names). pytest's arguments go after ``--`` and nowhere else. The kernel under test is parsed and
checked here, once, into a :class:`gmemtest.vmtier.kernelspec.KernelSpec` (both sides of
`diff` before anything is built), and no command prints a verdict that rests on tests that did
not run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import GmemtestError, one_line

if TYPE_CHECKING:
    from gmemtest.results.report import BootReport

# Commands that run the suite, and so take pytest's arguments after "--".
RUN_SUITE = {"vm run", "vm-test", "bisect-step", "matrix", "series walk", "diff", "coverage",
             "mutate"}


class UsageError(Exception):
    """What argparse finds wrong with a command line, as one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _command(args: argparse.Namespace) -> str:
    sub = getattr(args, "kernel_command", None) or getattr(args, "vm_command", None) \
        or getattr(args, "series_command", None)
    name = args.command.replace("matrix-merge", "matrix merge").replace("mutate-merge",
                                                                        "mutate merge")
    return f"{name} {sub}" if sub else name


# --- the kernel under test ------------------------------------------------------------------

def _fragments(args: argparse.Namespace) -> tuple[str, ...] | None:
    from gmemtest.vmtier.kconfig import DEFAULT_FRAGMENTS

    frags = tuple(getattr(args, "fragment", None) or ()) or None
    if getattr(args, "debug", False):
        frags = (*(frags or DEFAULT_FRAGMENTS), "debug")
    return frags


def _spec(args: argparse.Namespace) -> Any:
    """The kernel the command line names (gmemtest.vmtier.kernelspec), checked."""
    from gmemtest.vmtier import kernelspec

    return kernelspec.from_options(
        src=args.src, series=args.series, series_version=args.series_version,
        patches=args.patches, patch_dir=args.patch_dir, kpatches=args.kpatches,
        base=args.base, fragments=_fragments(args), build_dir=getattr(args, "build_dir", None))


def _limits(args: argparse.Namespace) -> Any:
    from gmemtest.vmtier.qemu import Limits

    return Limits(boot=args.boot_timeout, test=args.test_timeout, total=args.timeout,
                  silence=args.silence)


# --- commands ---------------------------------------------------------------------------------

def _cmd_caps(args: argparse.Namespace) -> int:
    from gmemtest.kvm import revision
    from gmemtest.kvm.kvm import Kvm

    from . import caps

    try:
        kvm = Kvm(args.kvm)
    except OSError as e:
        raise GmemtestError(f"cannot open {args.kvm}: {e.strerror}") from None
    with kvm:
        target = revision.determine(**_target_inputs(args), kvm=kvm)
        report = caps.collect(kvm, target)
    print(json.dumps(report, indent=2) if args.json else caps.render(report))
    return 0


def _target_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """What names the kernel's conversion capability: the options, else the environment
    (checked here, once)."""
    from gmemtest.testing import ENV_CAP, ENV_HEADERS, tunables

    cap = args.gmem_attr_cap
    if cap is None and os.environ.get(ENV_CAP):
        cap = int(tunables.check(ENV_CAP, os.environ[ENV_CAP], "environment"), 0)
    headers = args.kernel_headers
    if headers is None and os.environ.get(ENV_HEADERS):
        headers = Path(os.environ[ENV_HEADERS])
    return {"cap": cap, "headers": headers}


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


def _cmd_kernel_build(args: argparse.Namespace) -> int:
    from gmemtest.vmtier import kernel

    b = kernel.resolve(_spec(args), jobs=args.jobs)
    print(kernel.summary(b))
    return 0


def _cmd_kernel_selftests(args: argparse.Namespace) -> int:
    from gmemtest.vmtier import kernel

    listing = kernel.resolve(_spec(args)).kselftests
    if listing is None:
        raise GmemtestError("the kernel's build has no selftests (a kernel built elsewhere)")
    for p in listing.programs:
        print(f"{listing.binary(p)}" + (f"  needs {' '.join(p.needs)}" if p.needs else "")
              + (f"  {p.error}" if p.error else ""))
    return 0


def _cmd_kpatches_check(args: argparse.Namespace) -> int:
    from gmemtest.vmtier import kpatches

    found = kpatches.problems()
    for line in found:
        print(line)
    if found:
        raise GmemtestError(f"{len(found)} problem(s) in kpatches/ (above): it is kept as "
                            "gmemtest/vmtier/kpatches.py says")
    print(f"kpatches/: {', '.join(kpatches.bases())} kept as they should be")
    return 0


def _cmd_kpatches_range_diff(args: argparse.Namespace) -> int:
    from gmemtest.vmtier import kernel, kernelspec, kpatches

    sources = {b: kernel.prepare(kernelspec.from_options(base=b, patches=False))
               for b in (args.older, args.newer)}
    print(kpatches.range_diff(args.older, args.newer, sources))
    return 0


def _cmd_kpatches_export(args: argparse.Namespace) -> int:
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
    for p in done.written:
        print(f"wrote   {p}")
    for p in done.removed:
        print(f"removed {p}")
    return 0


def _cmd_kernel_show(args: argparse.Namespace) -> int:
    """What a spec names, checked, without building it."""
    from gmemtest.vmtier import kernelspec

    specs = [kernelspec.from_word(w, args.base) for w in args.words] if args.words \
        else [_spec(args)]
    for spec in specs:
        source = getattr(spec.source, "onto", spec.source)
        if isinstance(source, kernelspec.Debian) and source.fallback:
            print(f"base: {source.fallback}")
        print(spec.label())
    return 0


def _cmd_vm_run(args: argparse.Namespace) -> int:
    from gmemtest.results import report
    from gmemtest.vmtier import kernel, kernelspec, qemu
    from gmemtest.workflows import vmtest

    build = kernel.resolve(kernelspec.built(args.kernel))
    results = Path(args.results) if args.results else \
        vmtest.results_root() / time.strftime("run-%Y%m%d-%H%M%S")
    env = {}
    if args.headers:
        from gmemtest.testing import ENV_HEADERS

        if not (Path(args.headers) / "linux/kvm.h").is_file():
            raise GmemtestError(f"--headers {args.headers}: no linux/kvm.h there")
        env[ENV_HEADERS] = str(Path(args.headers).resolve())
    run = qemu.boot(build, args.pytest_args, results=results, cmdline=args.cmdline,
                    limits=_limits(args), env=env, image=_image(args), memory=args.memory)
    outcome = report.evaluate("run", run)
    print(report.summary([outcome]))
    if not outcome.ran:
        raise GmemtestError(f"the boot did not run its tests: {outcome.problem}")
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


def _cmd_coverage(args: argparse.Namespace) -> int:
    from gmemtest.vmtier import patchlines
    from gmemtest.workflows import coverage

    since = getattr(args, "since", None)
    if since is not None:
        if args.src is None:
            raise UsageError("--since REV names the base of a --src tree's own commits; a "
                             "series or kpatches carries its base")
        since = patchlines.check_since(Path(args.src), since)
    spec = _spec(args)
    return coverage.main(spec, args.pytest_args or None, _limits(args),
                         Path(args.out) if getattr(args, "out", None) else None, since)


def _cmd_mutate(args: argparse.Namespace) -> int:
    from gmemtest.results import mutation
    from gmemtest.workflows import mutate

    spec = _spec(args)
    marks = Path(args.marks) if args.marks else None
    if marks is not None and not marks.is_file():
        raise UsageError(f"--marks {marks}: no such file")
    if marks is None and spec.patches is not None and spec.patches.form is not None:
        marks = spec.patches.series_file.parent / mutate.MARKS  # kpatches/<base>/: our own
    if args.retry and not args.resume:
        raise UsageError("--retry OUTCOME runs again what a run recorded: it needs --resume DIR")
    extra = tuple(args.pytest_args or ())
    if any(a.startswith("-") for a in extra):
        raise UsageError("after -- mutate takes test node ids to run against every mutant, "
                         f"not pytest options ({next(a for a in extra if a.startswith('-'))})")
    if args.recheck_marks and (args.mutant or args.first or args.retry):
        raise UsageError("--recheck-marks runs every marked mutant: not with --mutant, "
                         "--first or --retry")
    choice = mutate.Choice(args.first, tuple(args.mutant), tuple(args.retry), extra,
                           args.tests_per_mutant or None, recheck=args.recheck_marks,
                           shard=mutation.parse_shard(args.shard) if args.shard else None)
    return mutate.main(spec, limits=mutate.LIMITS, out=Path(args.out) if args.out else None,
                       budget=args.budget, resume=Path(args.resume) if args.resume else None,
                       marks=marks, choice=choice)


def _cmd_vm_test(args: argparse.Namespace) -> int:
    from gmemtest.workflows import vmtest

    if args.harness and (args.coverage or args.affected is not None):
        raise UsageError("--harness runs the harness's own tests: not with --coverage or "
                         "--affected")
    if args.coverage:
        if args.affected is not None:
            raise UsageError("--coverage runs the whole suite to measure it; --affected picks "
                             "tests by an earlier measurement: give one of them")
        return _cmd_coverage(args)
    spec = _spec(args)
    image = _image(args)
    pytest_args = args.pytest_args or None
    if args.affected is not None:
        from gmemtest.vmtier import qemu
        from gmemtest.vmtier.kernelspec import Tree
        from gmemtest.workflows import affected

        if not isinstance(spec.source, Tree) or spec.patches or args.pytest_args:
            raise UsageError("--affected BASE needs --src TREE alone (the tree you edit) and "
                             "picks the tests itself: no pytest arguments after --")
        selection = affected.select(spec.source.path, args.affected)
        print(f"affected: {selection.describe()}", flush=True)
        if not selection.whole:
            pytest_args = [*selection.tests, *qemu.parallelism()]
    outcomes, text = vmtest.main_job(spec, pytest_args=pytest_args, limits=_limits(args),
                                     image=image, harness=args.harness)
    return _main_job_verdict("vm-test", outcomes, text)


def _main_job_verdict(command: str, outcomes: list[BootReport], text: str) -> int:
    """A main job's report, and its exit: 2 when a boot did not run its tests (said first),
    1 when one failed."""
    from gmemtest.workflows import vmtest

    why = vmtest.not_run(outcomes)
    if why:
        fail(command, why)
    print(text)
    if why:
        return 2
    return 0 if all(o.ok for o in outcomes) else 1


def _cmd_kselftest(args: argparse.Namespace) -> int:
    from gmemtest.vmtier import kernel
    from gmemtest.vmtier.checkout import CHECKOUT
    from gmemtest.vmtier.progress import Progress
    from gmemtest.workflows import kselftest, vmtest

    req = kselftest.request(args.scenario, args.name, CHECKOUT)
    spec = _spec(args)
    out = Path(args.out) if args.out else \
        vmtest.results_root() / time.strftime("kselftest-%Y%m%d-%H%M%S")
    gen = kselftest.generate(req, kernel.prepare(spec, Progress()), out)
    print(f"{gen.patch}\ncheckpatch.pl --strict: {gen.checkpatch}")
    if not gen.clean:
        raise GmemtestError(f"the generated patch is not checkpatch-clean: see "
                            f"{out / 'checkpatch.txt'}")
    if not args.run:
        return 0
    outcomes, text = kselftest.run(spec, gen, limits=_limits(args))
    return _main_job_verdict("kselftest", outcomes, text)


def _cmd_bisect_step(args: argparse.Namespace) -> int:
    from gmemtest.vmtier import kernelspec, qemu
    from gmemtest.workflows import bisect

    try:
        spec = kernelspec.current_tree(args.src, args.build_dir)
        pytest_args = args.pytest_args or ["-q", *qemu.parallelism()]
        if args.k:
            pytest_args = ["-k", args.k, *pytest_args]
        return bisect.step(spec, pytest_args, cmdline=args.cmdline, limits=_limits(args),
                           on_build_failure=args.build_failure,
                           on_boot_failure=args.boot_failure, switch=args.switch)
    except (GmemtestError, OSError) as e:
        fail("bisect-step", f"{one_line(e)} (abort: 128)")
        return bisect.ABORT


def _cmd_matrix(args: argparse.Namespace) -> int:
    from gmemtest.workflows import matrix

    return matrix.main(Path(args.config), Path(args.out) if args.out else None,
                       Path(args.baseline) if args.baseline else None, _limits(args),
                       args.pytest_args or None, cell=args.cell, list_cells=args.list,
                       kcidb_file=Path(args.kcidb) if args.kcidb else None)


def _posted(args: argparse.Namespace) -> Any:
    from gmemtest.vmtier import kernelspec

    return kernelspec.from_options(src=args.src, series=args.mbox,
                                   series_version=args.series_version, base=args.base,
                                   fragments=_fragments(args))


def _cmd_series_apply(args: argparse.Namespace) -> int:
    from gmemtest.vmtier import kernel

    spec = _posted(args)
    s = spec.source.series
    tree = kernel.series_tree(spec)
    print(f"series: {s.title()}")
    print(f"tree:   {tree.path} (base {tree.base})")
    for i, (sha, subject) in enumerate(tree.commits(), 1):
        print(f"  {i:2d}/{s.count} {sha[:12]} {subject}")
    print(f"bisect: cd {tree.path} && git bisect start HEAD HEAD~{s.count} && git bisect run "
          "gmemtest bisect-step -- TESTS")
    return 0


def _cmd_series_walk(args: argparse.Namespace) -> int:
    from gmemtest.workflows import walk

    rc, why = walk.main(_posted(args), args.pytest_args or None, _limits(args),
                        coverage=args.coverage)
    if why:
        fail("series walk", why)
    return rc


def _cmd_diff(args: argparse.Namespace) -> int:
    from gmemtest.vmtier import kernelspec
    from gmemtest.workflows import diff, vmtest

    a = kernelspec.from_word(args.a, args.base)  # both sides checked before anything is built
    b = kernelspec.from_word(args.b, args.base)
    out = Path(args.out) if args.out else \
        vmtest.results_root() / time.strftime("diff-%Y%m%d-%H%M%S")
    rc, why = diff.main(args.a, a, args.b, b, args.pytest_args or None, _limits(args), out,
                        coverage=args.coverage)
    if why:
        fail("diff", why)
    return rc


def _cmd_mutate_merge(args: argparse.Namespace) -> int:
    from gmemtest.workflows import mutate

    return mutate.merge_main([Path(d) for d in args.dirs], Path(args.out))


def _cmd_matrix_merge(args: argparse.Namespace) -> int:
    from gmemtest.workflows import matrix

    return matrix.merge_main([Path(d) for d in args.dirs], Path(args.config), Path(args.out),
                             Path(args.baseline) if args.baseline else None,
                             Path(args.kcidb) if args.kcidb else None)


def _cmd_bench(args: argparse.Namespace) -> int:
    from gmemtest.workflows import bench

    return bench.main(_spec(args), cmdline=args.cmdline or ["kvm.gmem_in_place_conversion=0"],
                      seconds=args.seconds, cold=args.cold,
                      out=Path(args.out) if args.out else None, limits=_limits(args),
                      edit_loop_only=args.edit_loop)


# --- the parser ---------------------------------------------------------------------------------

def _number(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: a number of seconds above 0")
    return value


def _minutes(text: str) -> float:
    try:
        return _seconds(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of minutes above 0") from None


def _whole(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number, 0 or above")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number above 0")
    return int(text)


def _add_vm_limits(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", metavar="DIR|debian",
                   help="boot a root image directory instead of sharing the host root "
                   "('debian': the one `gmemtest vm image` builds)")
    p.add_argument("--boot-timeout", type=_seconds, default=60, metavar="S",
                   help="seconds from QEMU start to the guest init's banner (default 60)")
    p.add_argument("--test-timeout", type=_seconds, default=300, metavar="S",
                   help="seconds per test, enforced in the guest (default 300)")
    p.add_argument("--timeout", type=_seconds, default=1800, metavar="S",
                   help="seconds for the whole boot (default 1800)")
    p.add_argument("--silence", type=_seconds, default=150, metavar="S",
                   help="seconds without console output after which the guest counts as hung "
                   "and is made to dump its tasks (default 150)")
    p.add_argument("--revision", metavar="NAME", default=None,
                   help="judge the kernel by this revision's rules (v8, applied) instead of "
                   "its own: each revision-dependent test must then fail")


def _add_fragments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fragment", action="append", default=[], metavar="NAME",
                   help="kconfigs/NAME.config to merge (repeatable; default base kvm mm faults)")
    p.add_argument("--debug", action="store_true",
                   help="add the debug kconfig fragment (KASAN, lockdep, ...)")


BASE_HELP = ("Debian's linux-source to build: X.Y, or newest (default: the newest that the "
             "suites offer and kpatches/ supports)")


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--src", metavar="DIR",
                   help="kernel tree to build (default: Debian's linux-source, see --base); "
                   "with --series, the base to apply it onto")
    p.add_argument("--base", metavar="X.Y", default=None, help=BASE_HELP)
    p.add_argument("--series", metavar="MBOX",
                   help="a posted series (an mbox: git format-patch --stdout, b4 am -o -, a "
                   "list archive), applied with git am onto the base")
    p.add_argument("--series-version", type=int, metavar="N",
                   help="the version of the series to take from the mbox (default: newest)")
    p.add_argument("--patches", action=argparse.BooleanOptionalAction, default=None,
                   help="apply a patch set (default: kpatches/ on Debian's source, none on "
                   "--src)")
    p.add_argument("--kpatches", metavar="FORM", default=None,
                   help="kpatches/ in this form of the conversion series: applied (default) "
                   "or v8")
    p.add_argument("--patch-dir", metavar="DIR", default=None,
                   help="apply this patch set (a dir with a series file) instead of kpatches/")


def _add_build_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--build-dir", metavar="DIR",
                   help="build there (default: the cache; a subdirectory of the tree lets ccache "
                   "share objects with other trees built that way)")


def _common() -> argparse.ArgumentParser:
    """The options every command takes, before or after its name."""
    c = Parser(add_help=False)
    c.add_argument("--gmem-attr-cap", type=_number, default=argparse.SUPPRESS, metavar="N",
                   help="number of KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES on the kernel under "
                   "test (default: from --kernel-headers)")
    c.add_argument("--kernel-headers", type=Path, default=argparse.SUPPRESS, metavar="DIR",
                   help="kernel tree or installed uapi headers of the kernel under test")
    return c


class _Sub(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands that take the common options too."""

    def add_parser(self, name: str, **kw: Any) -> Any:
        kw.setdefault("parents", [_common()])
        return super().add_parser(name, **kw)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="gmemtest", description=__doc__, parents=[_common()],
               epilog="pytest's arguments go after --: gmemtest vm-test -- -k conversion")
    p.register("action", "parsers", _Sub)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("caps", help="what the running kernel's KVM offers, and which revision "
                       "of the conversion series it implements")
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
    _add_fragments(kb)
    kb.add_argument("-j", "--jobs", type=int, default=None, help="make -j (default: cores)")
    _add_build_dir(kb)
    kb.set_defaults(func=_cmd_kernel_build)
    ks = ksub.add_parser("selftests", help="build the kernel tree's guest_memfd "
                              "selftests (every build does) and list them")
    _add_source(ks)
    ks.set_defaults(func=_cmd_kernel_selftests)
    kshow = ksub.add_parser("show", help="check and name a kernel under test without building "
                            "it (the options of kernel build, or diff's words)")
    _add_source(kshow)
    kshow.add_argument("--fragment", action="append", default=[], metavar="NAME")
    kshow.add_argument("--debug", action="store_true")
    kshow.add_argument("words", nargs="*", metavar="WORD",
                       help="as diff takes them: a build, a bzImage, a patch dir, an mbox, a "
                       "tree, kpatches[:FORM]")
    kshow.set_defaults(func=_cmd_kernel_show)

    kp = sub.add_parser("kpatches", help="kpatches/, the project's patches per Debian base, "
                        "kept as the stable queue keeps its patches")
    kpsub = kp.add_subparsers(dest="kpatches_command", required=True)
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
    ke.add_argument("--count", type=_count, metavar="N", help="how many of its last commits")
    ke.set_defaults(func=_cmd_kpatches_export)

    v = sub.add_parser("vm", help="boot a kernel under QEMU and run the suite in it")
    vsub = v.add_subparsers(dest="vm_command", required=True)
    vr = vsub.add_parser("run", help="one boot: gmemtest vm run --kernel BZIMAGE -- PYTEST_ARGS")
    vr.add_argument("--kernel", required=True, metavar="PATH",
                    help="the bzImage to boot, or its build directory")
    vr.add_argument("--cmdline", action="append", default=[], metavar="ARG",
                    help="extra kernel command line argument (repeatable)")
    vr.add_argument("--headers", metavar="DIR",
                    help="the kernel's installed uapi headers (default: its build's)")
    vr.add_argument("--results", metavar="DIR", help="results directory (default results/run-*)")
    vr.add_argument("--memory", default="3G", metavar="SIZE",
                    help="guest RAM, as QEMU's -m takes it (default 3G)")
    _add_vm_limits(vr)
    vr.set_defaults(func=_cmd_vm_run)
    vi = vsub.add_parser("image", help="build (or find) the self-contained Debian root image")
    vi.set_defaults(func=_cmd_vm_image)

    kst = sub.add_parser("kselftest", help="a model scenario (a fuzzer's reproducer, a finding) "
                         "as a KVM selftest patch against the kernel tree under test")
    kst.add_argument("scenario", metavar="SCENARIO",
                     help="the scenario: a file (`with Scenario.open(ROUTE, PAGES) as s:` and "
                     "its steps, as the model fuzzer writes them), or a finding's test "
                     "(tests/test_findings.py::test_finding[NAME])")
    kst.add_argument("--name", metavar="NAME", help="the selftest's name (default: the "
                     "scenario file's, ending in _test): tools/testing/selftests/kvm/x86/NAME.c")
    kst.add_argument("--out", metavar="DIR", help="where the patch goes (default "
                     "results/kselftest-*)")
    kst.add_argument("--run", action="store_true", help="build the kernel with the patch on "
                     "top and run the new selftest in both modes")
    _add_source(kst)
    _add_vm_limits(kst)
    kst.set_defaults(func=_cmd_kselftest)

    b = sub.add_parser("bisect-step", help="one step of `git bisect run`: build, boot, test; "
                       "exit 0 good, 1 bad, 125 skip, 128 abort")
    b.add_argument("--src", metavar="DIR", help="the kernel tree (default: the current dir)")
    b.add_argument("-k", metavar="EXPR", help="pytest -k expression selecting the tests")
    b.add_argument("--cmdline", action="append", default=[], metavar="ARG",
                   help="kernel command line argument (checked in the guest: one the kernel "
                   "does not take aborts)")
    b.add_argument("--switch", choices=("on", "off", "default"), default="on",
                   help="in-place conversion on or off (or the switch left at its default) "
                   "where the commit's kernel has kvm.gmem_in_place_conversion; a commit "
                   "without it boots as it is (a series' earlier patches; default: on)")
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
                       "linux-source, see --base)")
        x.add_argument("--base", metavar="X.Y", default=None, help=BASE_HELP)
    sa.set_defaults(func=_cmd_series_apply)
    sw.add_argument("--debug", action="store_true", help="add the debug kconfig fragment")
    sw.add_argument("--coverage", action="store_true", help="also boot the tip's coverage "
                    "build and draw the series' lines each test ran (coverage/ of the report)")
    _add_vm_limits(sw)
    sw.set_defaults(func=_cmd_series_walk)

    d = sub.add_parser("diff", help="the same suite on two kernels, both modes: every test "
                       "whose outcome differs")
    d.add_argument("a", metavar="A", help="a built kernel (build dir or bzImage), a patch "
                   "directory, a series mbox, a kernel tree, or kpatches[:FORM]")
    d.add_argument("b", metavar="B", help="the same, to compare with A")
    d.add_argument("--out", metavar="DIR", help="report directory (default results/diff-*)")
    d.add_argument("--base", metavar="X.Y", default=None, help=BASE_HELP + "; for kpatches, "
                   "patch directories and mboxes")
    d.add_argument("--coverage", action="store_true", help="boot each side's coverage build "
                   "(the suite one test at a time) and compare what each side's tests ran")
    _add_vm_limits(d)
    d.set_defaults(func=_cmd_diff)

    mm = _merge_parser(sub, "matrix", "cells run apart", "a cell's results directory "
                       "(OUT/cells/SLUG of `--cell`), or an OUT holding cells/",
                       _cmd_matrix_merge)
    mm.add_argument("--config", required=True, metavar="FILE", help="the matrix they come from")
    mm.add_argument("--baseline", metavar="FILE", help="an earlier run's matrix.json")
    mm.add_argument("--kcidb", metavar="FILE", help="also write the results as KCIDB JSON")
    _merge_parser(sub, "mutate", "a mutation run's shards, run apart", "a shard's report "
                  "directory (`gmemtest mutate --shard K/N --out DIR`)", _cmd_mutate_merge)

    be = sub.add_parser("bench", help="gmemtest against the upstream KVM selftests, and "
                        "micro-benchmarks, in one boot")
    _add_source(be)
    be.add_argument("--cmdline", action="append", default=[], metavar="ARG",
                    help="kernel command line (default kvm.gmem_in_place_conversion=0, where "
                    "every upstream selftest passes)")
    be.add_argument("--seconds", type=_seconds, default=1.0,
                    help="time per micro-benchmark (default 1)")
    be.add_argument("--cold", action="store_true",
                    help="also time a cold kernel build (fresh directory, ccache off)")
    be.add_argument("--edit-loop", action="store_true",
                    help="only the edit loop: edit one function, the covering tests' verdict "
                    "next to the whole suite's")
    be.add_argument("--out", metavar="DIR", help="report directory (default results/bench-*)")
    _add_vm_limits(be)
    be.set_defaults(func=_cmd_bench)

    cv = sub.add_parser("coverage", help="which lines of the series the suite runs, by which "
                        "test: the coverage build, both modes, reports drawn on the series")
    _add_source(cv)
    _add_fragments(cv)
    cv.add_argument("--since", metavar="REV", help="with --src: the tree's commits after REV "
                    "are the series to draw (a series tree knows its own)")
    cv.add_argument("--out", metavar="DIR", help="report directory (default results/coverage-*)")
    _add_vm_limits(cv)
    cv.set_defaults(func=_cmd_coverage)

    mu = sub.add_parser("mutate", help="small mistakes written into the series' run lines, "
                        "one at a time: which would the tests let through")
    _add_source(mu)
    _add_fragments(mu)
    mu.add_argument("--budget", type=_minutes, metavar="MIN",
                    help="stop starting mutants after MIN minutes; the rest are 'not run' "
                    "(--resume goes on)")
    mu.add_argument("--first", type=_count, metavar="N",
                    help="only the first N mutants of the deterministic order")
    mu.add_argument("--mutant", action="append", default=[], metavar="ID",
                    help="only this mutant (repeatable; ids as the reports give them); with "
                    "--resume, run it again, the report still covering the whole run")
    mu.add_argument("--tests-per-mutant", type=_whole, default=40, metavar="N",
                    help="run first the N quickest tests that ran the line, in each boot; a "
                    "mutant that survives them runs the rest (default 40; 0: all at once)")
    mu.add_argument("--resume", metavar="DIR", help="go on with the run in DIR")
    mu.add_argument("--retry", action="append", default=[], metavar="OUTCOME",
                    choices=["survived", "timed out", "killed", "did not build"],
                    help="with --resume: run again the mutants that ended so (repeatable)")
    mu.add_argument("--marks", metavar="FILE", help="mutants marked equivalent or "
                    "unobservable here, with reasons (default for kpatches/: "
                    "kpatches/<base>/mutant-marks.toml)")
    mu.add_argument("--shard", metavar="K/N", help="only part K of N of the mutants (every "
                    "N-th of the order, from the K-th): a run split over N jobs, merged by "
                    "`gmemtest mutate merge`")
    mu.add_argument("--recheck-marks", action="store_true",
                    help="run every marked mutant as if unmarked; one a test now kills loses "
                    "its mark (the marks file is written without it)")
    mu.add_argument("--out", metavar="DIR", help="report directory (default results/mutate-*)")
    mu.set_defaults(func=_cmd_mutate)

    t = sub.add_parser("vm-test", help="the main job: build, boot twice (in-place conversion "
                       "on and off), run the whole suite, one report")
    _add_source(t)
    _add_fragments(t)
    t.add_argument("--affected", metavar="BASE", default=None,
                   help="run only the tests that cover the functions `git diff BASE` of the "
                   "--src tree changes (its map: `gmemtest coverage --src TREE`)")
    t.add_argument("--coverage", action="store_true",
                   help="run it as `gmemtest coverage` does: the coverage build, its reports")
    t.add_argument("--harness", action="store_true",
                   help="instead of the kernel's tests, the harness's own, in one boot with "
                   "in-place conversion on (CI's check of gmemtest itself in a guest)")
    _add_vm_limits(t)
    t.set_defaults(func=_cmd_vm_test)
    return p


def _merge_parser(sub: Any, command: str, what: str, dir_help: str,
                  func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """`gmemtest COMMAND merge DIR... --out DIR`: the reports of ``what``, as one run of them
    would write (parsed as the command COMMAND-merge: see :func:`parse`)."""
    p: argparse.ArgumentParser = sub.add_parser(
        f"{command}-merge", prog=f"gmemtest {command} merge",
        help=f"(as `gmemtest {command} merge DIR...`) the reports of {what}, as one run of "
        "them would write")
    p.add_argument("dirs", nargs="+", metavar="DIR", help=dir_help)
    p.add_argument("--out", required=True, metavar="DIR", help="report directory")
    p.set_defaults(func=func)
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line as typed values; pytest's arguments are what follows the first
    ``--``, and only commands that run the suite take them."""
    if argv[1:2] == ["merge"] and argv[0] in ("matrix", "mutate"):
        argv = [f"{argv[0]}-merge", *argv[2:]]
    before, dash, after = argv, [], []
    if "--" in argv:
        i = argv.index("--")
        before, dash, after = argv[:i], ["--"], argv[i + 1:]
    args = parser().parse_args(before)
    args.pytest_args = after
    for name in ("gmem_attr_cap", "kernel_headers"):
        setattr(args, name, getattr(args, name, None))
    if dash and _command(args) not in RUN_SUITE:
        raise UsageError(f"gmemtest {_command(args)} runs no tests: it takes no pytest "
                         "arguments after --")
    from gmemtest.testing import ENV_REVISION, tunables

    revision = getattr(args, "revision", None)
    if revision is not None:
        os.environ[ENV_REVISION] = tunables.check(ENV_REVISION, revision, "--revision")
    tunables.from_environ(os.environ)  # a knob with a bad value: one line, before any work
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else "gmemtest"
    try:
        args = parse(argv)
        command = _command(args)
        return int(args.func(args))
    except UsageError as e:
        print(f"gmemtest: error: {e}", file=sys.stderr)
        return 2
    except (GmemtestError, OSError) as e:  # KvmError is an OSError
        fail(command, e)
        return 2
    except KeyboardInterrupt:
        print(f"gmemtest {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the last resort: a bug of gmemtest, said in one line
        fail(command, f"internal error: {type(e).__name__}: {one_line(e)} (the traceback is "
             f"in {_crash_log(command)}; please report it)")
        return 2


def _crash_log(command: str) -> Path:
    """Where the traceback of an unexpected exception goes."""
    from .cache import cache_dir

    text = f"gmemtest {command}: {' '.join(sys.argv)}\n{traceback.format_exc()}"
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        path = cache_dir("crashes") / name
        path.write_text(text)
    except OSError:
        path = Path("/tmp") / f"gmemtest-{name}"
        path.write_text(text)
    return path


def fail(command: str, e: BaseException | str) -> None:
    """Every failure of a command, in one line on stderr: what went wrong and what to do."""
    text = e if isinstance(e, str) else one_line(e)
    print(f"gmemtest {command}: error: {' '.join(text.split())}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
