"""Numbers owned by the unmerged in-place conversion series, resolved for the kernel under test.

KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES moved with every posting (249 in v7, 250 in v8) and will be
renumbered at merge, so it is never trusted as a constant. Resolution order:
1. an explicit value (``--gmem-attr-cap``) or $GMEMTEST_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES;
2. the ``#define`` in the kvm.h of a kernel tree or installed-headers dir (``--kernel-headers`` or
   $GMEMTEST_KERNEL_HEADERS);
3. the v8 posting's number.
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path

CAP_NAME = "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES"
V8_DEFAULT = 250
ENV_CAP = "GMEMTEST_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES"
ENV_HEADERS = "GMEMTEST_KERNEL_HEADERS"
PARAM_NAME = "kvm.gmem_in_place_conversion"
PARAM = Path("/sys/module/kvm/parameters/gmem_in_place_conversion")
PROC_CONFIG = Path("/proc/config.gz")
# Per-VM memory attributes: the series' user-selectable option, and upstream's name for it.
VM_ATTRIBUTES_OPTIONS = ("CONFIG_KVM_VM_MEMORY_ATTRIBUTES", "CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES")


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


def running_config() -> dict[str, str] | None:
    """The running kernel's .config from /proc/config.gz (CONFIG_IKCONFIG_PROC), as
    CONFIG_X -> value; None when the kernel does not expose it."""
    try:
        text = gzip.decompress(PROC_CONFIG.read_bytes()).decode(errors="replace")
    except OSError:
        return None
    return {m.group(1): m.group(2) for m in re.finditer(r"^(CONFIG_\w+)=(.*)$", text, re.M)}


def vm_memory_attributes() -> bool | None:
    """Whether the running kernel keeps per-VM memory attributes (KVM_SET_MEMORY_ATTRIBUTES
    exists): CONFIG_KVM_VM_MEMORY_ATTRIBUTES, or upstream's CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES.
    None when the config cannot be read."""
    config = running_config()
    if config is None:
        return None
    return any(config.get(o) == "y" for o in VM_ATTRIBUTES_OPTIONS)


def param_on_cmdline() -> bool:
    """Whether the kernel command line sets kvm.gmem_in_place_conversion."""
    try:
        words = Path("/proc/cmdline").read_text().split()
    except OSError:
        return False
    return any(w.split("=", 1)[0] in (PARAM_NAME, PARAM_NAME.replace("_", "-")) for w in words)
