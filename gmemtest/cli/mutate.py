"""`gmemtest coverage`, `gmemtest mutate` and `gmemtest mutate merge`: which lines of a series
the suite runs, and which mistakes in them it would let through."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gmemtest.results.answer import Answer

from . import UsageError, options


def run_coverage(args: argparse.Namespace) -> Answer:
    """`gmemtest coverage` (and `gmemtest vm-test --coverage`)."""
    from gmemtest.vmtier import patchlines
    from gmemtest.workflows import coverage

    since = getattr(args, "since", None)
    if since is not None:
        if args.src is None:
            raise UsageError("--since REV names the base of a --src tree's own commits; a "
                             "series or kpatches carries its base")
        since = patchlines.check_since(Path(args.src), since)
    spec = options.spec(args)
    return coverage.main(spec, args.pytest_args or None, options.limits(args),
                         Path(args.out) if getattr(args, "out", None) else None, since)


def _cmd_mutate(args: argparse.Namespace) -> Answer:
    from gmemtest.results import mutation
    from gmemtest.workflows import mutate

    spec = options.spec(args)
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


def _cmd_mutate_merge(args: argparse.Namespace) -> Answer:
    from gmemtest.workflows import mutate

    return mutate.merge_main([Path(d) for d in args.dirs], Path(args.out))


def add(sub: Any) -> None:
    """Its commands, on the command line."""
    cv = sub.add_parser("coverage", help="which lines of the series the suite runs, by which "
                        "test: the coverage build, both modes, reports drawn on the series")
    options.add_source(cv)
    options.add_fragments(cv)
    cv.add_argument("--since", metavar="REV", help="with --src: the tree's commits after REV "
                    "are the series to draw (a series tree knows its own)")
    cv.add_argument("--out", metavar="DIR", help="report directory (default results/coverage-*)")
    options.add_vm_limits(cv)
    cv.set_defaults(func=run_coverage)

    mu = sub.add_parser("mutate", help="small mistakes written into the series' run lines, "
                        "one at a time: which would the tests let through")
    options.add_source(mu)
    options.add_fragments(mu)
    mu.add_argument("--budget", type=options.minutes, metavar="MIN",
                    help="stop starting mutants after MIN minutes; the rest are 'not run' "
                    "(--resume goes on)")
    mu.add_argument("--first", type=options.count, metavar="N",
                    help="only the first N mutants of the deterministic order")
    mu.add_argument("--mutant", action="append", default=[], metavar="ID",
                    help="only this mutant (repeatable; ids as the reports give them); with "
                    "--resume, run it again, the report still covering the whole run")
    mu.add_argument("--tests-per-mutant", type=options.whole, default=40, metavar="N",
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
    options.merge_parser(mu, "mutate_command", "a mutation run's shards, run apart", "a "
                         "shard's report directory (`gmemtest mutate --shard K/N --out DIR`)",
                         _cmd_mutate_merge)

