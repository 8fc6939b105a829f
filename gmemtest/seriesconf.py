"""Numbers owned by the unmerged in-place conversion series, resolved for the kernel under test.

KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES moved with every posting (249 in v7, 250 in v8) and will be
renumbered at merge, so it is never trusted as a constant. Resolution order:
1. an explicit value (``--gmem-attr-cap``) or $GMEMTEST_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES;
2. the ``#define`` in the kvm.h of a kernel tree or installed-headers dir (``--kernel-headers`` or
   $GMEMTEST_KERNEL_HEADERS);
3. the v8 posting's number.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

CAP_NAME = "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES"
V8_DEFAULT = 250
ENV_CAP = "GMEMTEST_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES"
ENV_HEADERS = "GMEMTEST_KERNEL_HEADERS"
PARAM = Path("/sys/module/kvm/parameters/gmem_in_place_conversion")


@dataclass(frozen=True)
class Resolved:
    value: int
    source: str


def kvm_header(path: str | Path) -> Path | None:
    """linux/kvm.h under a kernel source tree, a headers_install dir or an include dir."""
    root = Path(path)
    for rel in ("include/uapi/linux/kvm.h", "include/linux/kvm.h", "linux/kvm.h",
                "usr/include/linux/kvm.h"):
        if (root / rel).is_file():
            return root / rel
    return None


def define_in(header: Path, name: str) -> int | None:
    """The integer value of ``#define name N`` in ``header``, if it has one."""
    m = re.search(rf"^#define\s+{re.escape(name)}\s+(0x[0-9a-fA-F]+|\d+)\b",
                  header.read_text(errors="replace"), re.M)
    return int(m.group(1), 0) if m else None


def conversion_cap(override: int | None = None, headers: str | Path | None = None) -> Resolved:
    """The KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES number to query, and where it came from."""
    if override is not None:
        return Resolved(override, "option")
    if os.environ.get(ENV_CAP):
        return Resolved(int(os.environ[ENV_CAP], 0), f"${ENV_CAP}")
    headers = headers or os.environ.get(ENV_HEADERS)
    if headers:
        header = kvm_header(headers)
        if header is not None:
            value = define_in(header, CAP_NAME)
            if value is not None:
                return Resolved(value, str(header))
    return Resolved(V8_DEFAULT, "v8 default")


def in_place_conversion_param() -> bool | None:
    """kvm.gmem_in_place_conversion as the running kernel has it, or None when absent."""
    try:
        return PARAM.read_text().strip() in ("Y", "1")
    except OSError:
        return None
