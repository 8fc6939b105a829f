"""Kernel configuration: tinyconfig with the kconfigs/ fragments, then verified.

Kconfig silently drops an option whose dependencies are unmet; :func:`verify` finds every
requested option missing from the final .config and names what it depends on, with the values
those dependencies ended up with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gmemtest import tool
from gmemtest.errors import GmemtestError

from .checkout import KCONFIGS

DEFAULT_FRAGMENTS = ("base", "kvm", "mm", "faults")
OPTIONAL_FRAGMENTS = ("debug",)


def fragment_paths(names: list[str] | tuple[str, ...]) -> list[Path]:
    """kconfigs/NAME.config for each name (a path to a .config file is taken as is)."""
    paths = []
    for name in names:
        p = Path(name) if name.endswith(".config") else KCONFIGS / f"{name}.config"
        if not p.is_file():
            known = ", ".join(sorted(f.stem for f in KCONFIGS.glob("*.config")))
            raise GmemtestError(f"no kconfig fragment {name!r} (known: {known})")
        paths.append(p)
    return paths


def requested(fragments: list[Path]) -> dict[str, str]:
    """CONFIG_X -> value asked for by the fragments (later fragments win)."""
    want: dict[str, str] = {}
    for f in fragments:
        for line in f.read_text().splitlines():
            m = re.match(r"^(CONFIG_\w+)=(.*)$", line.strip())
            n = re.match(r"^# (CONFIG_\w+) is not set$", line.strip())
            if m:
                want[m.group(1)] = m.group(2)
            elif n:
                want[n.group(1)] = "n"
    return want


def read_config(path: Path) -> dict[str, str]:
    """A .config as CONFIG_X -> value ('n' for '# ... is not set')."""
    return requested([path])


@dataclass(frozen=True)
class Dropped:
    option: str
    wanted: str
    got: str
    needs: str


def _dependencies(src: Path, option: str, config: dict[str, str]) -> str:
    """The 'depends on' lines of ``option`` and the 'if'/'menu' blocks around it, with the
    values their symbols have in the final config."""
    name = option.removeprefix("CONFIG_")
    found: list[str] = []
    for kconfig in src.rglob("Kconfig*"):
        try:
            lines = kconfig.read_text(errors="replace").splitlines()
        except OSError:
            continue
        ifs: list[str] = []
        for i, line in enumerate(lines):
            s = line.strip()
            # Kconfig's if blocks start at the margin; an indented "if" is help text.
            if line.startswith("if "):
                ifs.append(s[3:])
            elif line.rstrip() == "endif" and ifs:
                ifs.pop()
            elif re.match(rf"^(menu)?config\s+{name}$", s):
                deps = [f"if {c}" for c in ifs]
                for nxt in lines[i + 1:]:
                    t = nxt.strip()
                    if re.match(r"^(config|menuconfig|menu|endmenu|if|endif|choice|comment)\b", t):
                        break
                    if t.startswith("depends on "):
                        deps.append(t.removeprefix("depends on "))
                found += deps
    if not found:
        return "no Kconfig definition found (renamed or removed in this tree?)"

    def value(m: re.Match[str]) -> str:
        sym = m.group(0)
        return f"{sym}={config.get('CONFIG_' + sym, 'n')}" if sym.isupper() else sym

    return "; ".join(re.sub(r"\b[A-Z][A-Z0-9_]+\b", value, d) for d in dict.fromkeys(found))


# Options known under another name in some trees: in a tree without a Kconfig definition of
# the name a fragment asks for, the other name is what its request is checked against (the
# fragments ask for both where the second is a prompt of its own).
RENAMES = {
    # the in-place conversion series renames the upstream option
    "CONFIG_KVM_VM_MEMORY_ATTRIBUTES": "CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES",
    # 7.3 folds /proc/sys support into SYSCTL (fs/proc/Kconfig)
    "CONFIG_PROC_SYSCTL": "CONFIG_SYSCTL",
}


def defined(src: Path, option: str) -> bool:
    """Whether some Kconfig file of the tree defines ``option``."""
    pattern = re.compile(rf"^\s*(menu)?config\s+{option.removeprefix('CONFIG_')}\s*$", re.M)
    return any(pattern.search(k.read_text(errors="replace")) for k in src.rglob("Kconfig*"))


def verify(src: Path, fragments: list[Path], config_path: Path) -> list[Dropped]:
    """Options the fragments ask for that the final .config does not have."""
    config = read_config(config_path)
    dropped = []
    for option, wanted in requested(fragments).items():
        got = config.get(option, "n")
        if got != wanted and option in RENAMES and not defined(src, option):
            option = RENAMES[option]
            got = config.get(option, "n")
        if got != wanted:
            dropped.append(Dropped(option, wanted, got, _dependencies(src, option, config)))
    return dropped


# How the .config is made, in a word: a change here makes every build directory configure again.
GENERATOR = "allnoconfig+tiny+fragments"

# What ``make tinyconfig`` gives allnoconfig (and merges after it), in the tree's own files.
TINY_FRAGMENTS = ("kernel/configs/tiny-base.config", "kernel/configs/tiny.config",
                  "arch/x86/configs/tiny.config")


def generate(src: Path, build: Path, fragments: list[Path], env: dict[str, str]) -> Path:
    """allnoconfig with tinyconfig's fragments and ours as its given values, in ``build``;
    raises when any requested option was dropped.

    Unlike merging onto a finished tinyconfig, an option a fragment makes visible (INET under
    NET, VT under TTY, the PS/2 mouse under INPUT) gets n rather than its default y: the
    kernel holds what the fragments name and what that selects, nothing else."""
    build.mkdir(parents=True, exist_ok=True)
    given = build / "gmemtest-allnoconfig.config"
    given.write_text("".join(
        (src / f).read_text() for f in TINY_FRAGMENTS if (src / f).is_file())
        + "".join(f.read_text() for f in fragments))
    tool.run(["make", "-s", "-C", src, f"O={build}", f"KCONFIG_ALLCONFIG={given}",
              "allnoconfig"], f"make allnoconfig in {src}", env=env)
    check(src, fragments, build / ".config")
    return build / ".config"


def check(src: Path, fragments: list[Path], config_path: Path) -> None:
    dropped = verify(src, fragments, config_path)
    if dropped:
        parts = [f"{d.option}={d.wanted} (got {d.got}; needs {d.needs})" for d in dropped]
        raise GmemtestError(f"kconfig: {len(dropped)} requested option(s) not in the final "
                            f".config: {' | '.join(parts)}; fix the fragment or its dependencies")
