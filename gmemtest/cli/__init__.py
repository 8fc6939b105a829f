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
import os
import sys
import time
import traceback
from pathlib import Path
from typing import NoReturn

from gmemtest.errors import GmemtestError, one_line
from gmemtest.results.answer import Answer

# Commands that run the suite, and so take pytest's arguments after "--".
RUN_SUITE = {"vm run", "vm-test", "bisect-step", "matrix", "series walk", "diff", "coverage",
             "mutate"}
# The commands that have commands of their own: the attribute naming which one was given.
GROUPS = ("kernel_command", "kpatches_command", "vm_command", "series_command",
          "matrix_command", "mutate_command")


class UsageError(Exception):
    """What argparse finds wrong with a command line, as one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _command(args: argparse.Namespace) -> str:
    """The command as the user typed it: ``kernel build``, ``matrix merge``."""
    sub = next((getattr(args, g) for g in GROUPS if getattr(args, g, None)), None)
    return f"{args.command} {sub}" if sub else str(args.command)


def parser() -> argparse.ArgumentParser:
    """The command line: each group of commands adds its own (gmemtest/cli/*.py)."""
    from . import bench, host, kernel, matrix, mutate, options, series, vm

    p = Parser(prog="gmemtest", description=__doc__, parents=[options.common()],
               epilog="pytest's arguments go after --: gmemtest vm-test -- -k conversion")
    p.register("action", "parsers", options.Sub)
    sub = p.add_subparsers(dest="command", required=True)
    for group in (host, kernel, vm, matrix, series, bench, mutate):
        group.add(sub)
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line as typed values; pytest's arguments are what follows the first
    ``--``, and only commands that run the suite take them."""
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
        answer: Answer = args.func(args)
        if answer.no_verdict:  # said first: no verdict rests on tests that did not run
            fail(command, answer.no_verdict)
        if answer.text:
            print(answer.text)
        return answer.status
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
    from gmemtest.cache import cache_dir

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
