"""`gmemtest matrix` and `gmemtest matrix merge`: the nightly matrix, whole or a cell at a
time, and its cells' reports as one."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gmemtest.results.answer import Answer

from . import UsageError, options


def _cmd_matrix(args: argparse.Namespace) -> Answer:
    from gmemtest.workflows import matrix

    if args.config is None:
        raise UsageError("the following arguments are required: --config (see gmemtest matrix "
                         "--help)")
    return matrix.main(Path(args.config), Path(args.out) if args.out else None,
                       Path(args.baseline) if args.baseline else None, options.limits(args),
                       args.pytest_args or None, cell=args.cell, list_cells=args.list,
                       kcidb_file=Path(args.kcidb) if args.kcidb else None)


def _cmd_matrix_merge(args: argparse.Namespace) -> Answer:
    from gmemtest.workflows import matrix

    return matrix.merge_main([Path(d) for d in args.dirs], Path(args.config), Path(args.out),
                             Path(args.baseline) if args.baseline else None,
                             Path(args.kcidb) if args.kcidb else None)


def add(sub: Any) -> None:
    """Its commands, on the command line."""
    m = sub.add_parser("matrix", help="the nightly job: kernels x kconfig sets x command lines, "
                       "one report (JUnit, KTAP, Markdown, HTML)")
    m.add_argument("--config", metavar="FILE", help="the matrix (TOML; see "
                   "matrices/nightly.toml; required)")
    m.add_argument("--out", metavar="DIR", help="report directory (default results/matrix-*)")
    m.add_argument("--baseline", metavar="FILE", help="an earlier run's matrix.json: exit "
                   "non-zero only when something regressed against it")
    m.add_argument("--list", action="store_true", help="print every cell with its id, as "
                   "JSON, and exit (a CI engine makes a job of each)")
    m.add_argument("--cell", metavar="ID", help="build, boot and run this cell alone into "
                   "OUT/cells/SLUG; `gmemtest matrix merge` makes the reports")
    m.add_argument("--kcidb", metavar="FILE", help="also write the results as KCIDB JSON")
    options.add_vm_limits(m)
    m.set_defaults(func=_cmd_matrix)
    mm = options.merge_parser(m, "matrix_command", "cells run apart", "a cell's results "
                              "directory (OUT/cells/SLUG of `--cell`), or an OUT holding cells/",
                              _cmd_matrix_merge)
    mm.add_argument("--config", required=True, metavar="FILE", help="the matrix they come from")
    mm.add_argument("--baseline", metavar="FILE", help="an earlier run's matrix.json")
    mm.add_argument("--kcidb", metavar="FILE", help="also write the results as KCIDB JSON")

