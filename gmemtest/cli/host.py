"""`gmemtest caps` and `gmemtest abi-check`: the running kernel's KVM, and gmemtest's uAPI
against a kernel's headers."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from gmemtest.errors import GmemtestError
from gmemtest.results.answer import Answer


def _cmd_caps(args: argparse.Namespace) -> Answer:
    from gmemtest import caps
    from gmemtest.kvm import revision
    from gmemtest.kvm.kvm import Kvm

    try:
        kvm = Kvm(args.kvm)
    except OSError as e:
        raise GmemtestError(f"cannot open {args.kvm}: {e.strerror}") from None
    with kvm:
        target = revision.determine(**_target_inputs(args), kvm=kvm)
        report = caps.collect(kvm, target)
    return Answer(0, json.dumps(report, indent=2) if args.json else caps.render(report))


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


def _cmd_abi_check(args: argparse.Namespace) -> Answer:
    from gmemtest import abi

    headers = Path(args.headers) if args.headers else None
    src = Path(args.kernel_src) if args.kernel_src else None
    for p in (headers, src):
        if p is not None and not p.is_dir():
            raise GmemtestError(f"{p} is not a directory")
    dirs = abi.include_dirs(headers, src)
    results = abi.check(dirs, headers or src)
    return Answer(1 if any(r.status is abi.Status.DRIFT for r in results) else 0,
                  abi.report(results, show_all=args.all))


def add(sub: Any) -> None:
    """Its commands, on the command line."""
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

