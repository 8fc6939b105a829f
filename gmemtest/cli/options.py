"""What several commands take: the kernel under test (SPEC), kconfig fragments, a build
directory, the boot's limits, and the value types of their options."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gmemtest.errors import GmemtestError
from gmemtest.results.answer import Answer


def fragments(args: argparse.Namespace) -> tuple[str, ...] | None:
    from gmemtest.vmtier.kconfig import DEFAULT_FRAGMENTS

    frags = tuple(getattr(args, "fragment", None) or ()) or None
    if getattr(args, "debug", False):
        frags = (*(frags or DEFAULT_FRAGMENTS), "debug")
    return frags


def spec(args: argparse.Namespace) -> Any:
    """The kernel the command line names (gmemtest.vmtier.kernelspec), checked."""
    from gmemtest.vmtier import kernelspec

    return kernelspec.from_options(
        src=args.src, series=args.series, series_version=args.series_version,
        patches=args.patches, patch_dir=args.patch_dir, kpatches=args.kpatches,
        base=args.base, fragments=fragments(args), build_dir=getattr(args, "build_dir", None))


def limits(args: argparse.Namespace) -> Any:
    from gmemtest.vmtier.qemu import Limits

    return Limits(boot=args.boot_timeout, test=args.test_timeout, total=args.timeout,
                  silence=args.silence)


def image(args: argparse.Namespace) -> Path | None:
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


def posted(args: argparse.Namespace) -> Any:
    from gmemtest.vmtier import kernelspec

    return kernelspec.from_options(src=args.src, series=args.mbox,
                                   series_version=args.series_version, base=args.base,
                                   fragments=fragments(args))


def number(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: a number of seconds above 0")
    return value


def minutes(text: str) -> float:
    try:
        return seconds(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of minutes above 0") from None


def whole(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number, 0 or above")
    return int(text)


def count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number above 0")
    return int(text)


def add_vm_limits(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", metavar="DIR|debian",
                   help="boot a root image directory instead of sharing the host root "
                   "('debian': the one `gmemtest vm image` builds)")
    p.add_argument("--boot-timeout", type=seconds, default=60, metavar="S",
                   help="seconds from QEMU start to the guest init's banner (default 60)")
    p.add_argument("--test-timeout", type=seconds, default=300, metavar="S",
                   help="seconds per test, enforced in the guest (default 300)")
    p.add_argument("--timeout", type=seconds, default=1800, metavar="S",
                   help="seconds for the whole boot (default 1800)")
    p.add_argument("--silence", type=seconds, default=150, metavar="S",
                   help="seconds without console output after which the guest counts as hung "
                   "and is made to dump its tasks (default 150)")
    p.add_argument("--revision", metavar="NAME", default=None,
                   help="judge the kernel by this revision's rules (v8, applied) instead of "
                   "its own: each revision-dependent test must then fail")


def add_fragments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fragment", action="append", default=[], metavar="NAME",
                   help="kconfigs/NAME.config to merge (repeatable; default base kvm mm faults)")
    p.add_argument("--debug", action="store_true",
                   help="add the debug kconfig fragment (KASAN, lockdep, ...)")


BASE_HELP = ("Debian's linux-source to build: X.Y, or newest (default: the newest that the "
             "suites offer and kpatches/ supports)")


BASE_HELP = ("Debian's linux-source to build: X.Y, or newest (default: the newest that the "
             "suites offer and kpatches/ supports)")


def add_source(p: argparse.ArgumentParser) -> None:
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


def add_build_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--build-dir", metavar="DIR",
                   help="build there (default: the cache; a subdirectory of the tree lets ccache "
                   "share objects with other trees built that way)")


def common() -> argparse.ArgumentParser:
    """The options every command takes, before or after its name."""
    from . import Parser

    c = Parser(add_help=False)
    c.add_argument("--gmem-attr-cap", type=number, default=argparse.SUPPRESS, metavar="N",
                   help="number of KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES on the kernel under "
                   "test (default: from --kernel-headers)")
    c.add_argument("--kernel-headers", type=Path, default=argparse.SUPPRESS, metavar="DIR",
                   help="kernel tree or installed uapi headers of the kernel under test")
    return c


class Sub(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands that take the common options too."""

    def add_parser(self, name: str, **kw: Any) -> Any:
        kw.setdefault("parents", [common()])
        return super().add_parser(name, **kw)



def merge_parser(command: argparse.ArgumentParser, dest: str, what: str, dir_help: str,
                 func: Callable[[argparse.Namespace], Answer]) -> argparse.ArgumentParser:
    """``gmemtest COMMAND merge DIR... --out DIR``, a command of COMMAND's own: the reports of
    ``what``, as one run of them would write."""
    sub = command.add_subparsers(dest=dest, metavar="merge")
    p: argparse.ArgumentParser = sub.add_parser(
        "merge", help=f"the reports of {what}, as one run of them would write")
    p.add_argument("dirs", nargs="+", metavar="DIR", help=dir_help)
    p.add_argument("--out", required=True, metavar="DIR", help="report directory")
    p.set_defaults(func=func)
    return p
