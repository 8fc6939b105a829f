"""The `gmemtest` command. Every failure ends in one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import seriesconf
from .errors import GmemtestError, KvmError


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
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.kernel_headers:
        os.environ[seriesconf.ENV_HEADERS] = args.kernel_headers
    try:
        return args.func(args)
    except (GmemtestError, KvmError) as e:
        print(f"gmemtest {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gmemtest {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
