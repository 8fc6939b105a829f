"""Guest programs, kept as assembly source and assembled with binutils on first use."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from functools import cache
from pathlib import Path

from gmemtest import tool
from gmemtest.cache import cache_dir, write_atomically
from gmemtest.errors import GmemtestError

SOURCE_DIR = Path(__file__).parent


def assemble(source: Path) -> bytes:
    """Assemble ``source`` (GNU as, 64-bit) into a flat binary of its .text section."""
    for binary in ("as", "objcopy"):
        if shutil.which(binary) is None:
            raise GmemtestError(f"binutils '{binary}' not found: apt-get install binutils")
    with tempfile.TemporaryDirectory(prefix="gmemtest-as-") as tmp:
        obj, flat = Path(tmp, "prog.o"), Path(tmp, "prog.bin")
        for cmd in (["as", "--64", "-o", str(obj), str(source)],
                    ["objcopy", "-O", "binary", "-j", ".text", str(obj), str(flat)]):
            tool.run(cmd, f"{cmd[0]} on {source}")
        return flat.read_bytes()


@cache
def image(name: str) -> bytes:
    """The flat binary of guest program ``name`` (``guest/NAME.s``), cached by source hash."""
    source = SOURCE_DIR / f"{name}.s"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    built = cache_dir("guest") / f"{name}-{digest}.bin"
    if built.exists():
        return built.read_bytes()
    data = assemble(source)
    write_atomically(built, data)
    return data
