"""`gmemtest vm run|image`, `gmemtest vm-test` (the main job), `gmemtest kselftest` and
`gmemtest bisect-step`: booting a kernel and running the suite in it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gmemtest.errors import GmemtestError, one_line
from gmemtest.results.answer import Answer

if TYPE_CHECKING:
    pass

from . import UsageError, options


def _cmd_vm_run(args: argparse.Namespace) -> Answer:
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
                    limits=options.limits(args), env=env, image=options.image(args),
                    memory=args.memory)
    outcome = report.evaluate("run", run)
    return Answer.of_boots([outcome], report.summary([outcome]))


def _cmd_vm_image(args: argparse.Namespace) -> Answer:
    from gmemtest.vmtier import vmimage

    root = vmimage.build()
    return Answer(0, f"{root}\n{(root / 'gmemtest-image.json').read_text().strip()}")


def _cmd_vm_test(args: argparse.Namespace) -> Answer:
    from gmemtest.workflows import vmtest

    if args.harness and (args.coverage or args.affected is not None):
        raise UsageError("--harness runs the harness's own tests: not with --coverage or "
                         "--affected")
    if args.coverage:
        if args.affected is not None:
            raise UsageError("--coverage runs the whole suite to measure it; --affected picks "
                             "tests by an earlier measurement: give one of them")
        from .mutate import run_coverage

        return run_coverage(args)
    spec = options.spec(args)
    image = options.image(args)
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
    outcomes, text = vmtest.main_job(spec, pytest_args=pytest_args, limits=options.limits(args),
                                     image=image, harness=args.harness)
    return Answer.of_boots(outcomes, text)


def _cmd_kselftest(args: argparse.Namespace) -> Answer:
    from gmemtest.vmtier import kernel
    from gmemtest.vmtier.checkout import CHECKOUT
    from gmemtest.vmtier.progress import Progress
    from gmemtest.workflows import kselftest, vmtest

    req = kselftest.request(args.scenario, args.name, CHECKOUT)
    spec = options.spec(args)
    out = Path(args.out) if args.out else \
        vmtest.results_root() / time.strftime("kselftest-%Y%m%d-%H%M%S")
    gen = kselftest.generate(req, kernel.prepare(spec, Progress()), out)
    made = f"{gen.patch}\ncheckpatch.pl --strict: {gen.checkpatch}"
    if not gen.clean:
        raise GmemtestError(f"the generated patch is not checkpatch-clean: see "
                            f"{out / 'checkpatch.txt'}")
    if not args.run:
        return Answer(0, made)
    outcomes, text = kselftest.run(spec, gen, limits=options.limits(args))
    return Answer.of_boots(outcomes, f"{made}\n{text}")


def _cmd_bisect_step(args: argparse.Namespace) -> Answer:
    from gmemtest.vmtier import kernelspec, qemu
    from gmemtest.workflows import bisect

    try:
        spec = kernelspec.current_tree(args.src, args.build_dir)
        pytest_args = args.pytest_args or ["-q", *qemu.parallelism()]
        if args.k:
            pytest_args = ["-k", args.k, *pytest_args]
        return Answer(bisect.step(spec, pytest_args, cmdline=args.cmdline,
                                  limits=options.limits(args),
                                  on_build_failure=args.build_failure,
                                  on_boot_failure=args.boot_failure, switch=args.switch))
    except (GmemtestError, OSError) as e:
        return Answer(bisect.ABORT, no_verdict=f"{one_line(e)} (abort: 128)")


def add(sub: Any) -> None:
    """Its commands, on the command line."""
    v = sub.add_parser("vm", help="boot a kernel under QEMU and run the suite in it")
    vsub = v.add_subparsers(dest="vm_command", required=True, metavar="run|image")
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
    options.add_vm_limits(vr)
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
    options.add_source(kst)
    options.add_vm_limits(kst)
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
    options.add_build_dir(b)
    options.add_vm_limits(b)
    b.set_defaults(func=_cmd_bisect_step)

    t = sub.add_parser("vm-test", help="the main job: build, boot twice (in-place conversion "
                       "on and off), run the whole suite, one report")
    options.add_source(t)
    options.add_fragments(t)
    t.add_argument("--affected", metavar="BASE", default=None,
                   help="run only the tests that cover the functions `git diff BASE` of the "
                   "--src tree changes (its map: `gmemtest coverage --src TREE`)")
    t.add_argument("--coverage", action="store_true",
                   help="run it as `gmemtest coverage` does: the coverage build, its reports")
    t.add_argument("--harness", action="store_true",
                   help="instead of the kernel's tests, the harness's own, in one boot with "
                   "in-place conversion on (CI's check of gmemtest itself in a guest)")
    options.add_vm_limits(t)
    t.set_defaults(func=_cmd_vm_test)
