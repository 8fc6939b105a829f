"""`gmemtest kselftest`: a finding as upstream takes it. A model scenario (the model fuzzer's
minimal reproducer, or a finding written in the model's words: tests/data/findings/) becomes a
KVM selftest in C (gmemtest.testing.selftest_writer), added to the kernel tree under test as
tools/testing/selftests/kvm/x86/NAME.c with its Makefile.kvm entry, in one patch as `git
format-patch` writes it, checked with the tree's scripts/checkpatch.pl. With ``run``, the
kernel under test is built with the patch on top and booted in both modes, where the new
program runs as one of the tree's selftests (tests/test_tree_selftests.py).
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

from gmemtest.errors import GmemtestError
from gmemtest.results import report
from gmemtest.testing import selftest_writer
from gmemtest.vmtier import patchfile, qemu
from gmemtest.vmtier.kernelspec import KernelSpec
from gmemtest.vmtier.selftests import KVM_DIR

from . import vmtest

NAME = re.compile(r"^[a-z][a-z0-9_]*_test$")
# A finding's test in the suite, and where its scenario lies.
FINDING_TEST = re.compile(r"^(?:\./)?tests/test_findings\.py::test_finding"
                          r"\[(?P<name>[a-z0-9_]+)\]$")
FINDINGS = Path("tests/data/findings")
IDENTITY = ("gmemtest", "gmemtest@localhost")


@dataclass(frozen=True)
class Generated:
    """What the command made: the patch, the program's path in the tree, checkpatch's verdict."""

    patch: Path
    program: str  # x86/NAME, as the tree's selftests name it
    checkpatch: str  # its last line ("total: 0 errors, 0 warnings, ...")
    clean: bool


def scenario_of(arg: str, checkout: Path) -> Path:
    """The scenario file ``arg`` names: a file, or a finding's test in the suite
    (tests/test_findings.py::test_finding[NAME], whose scenario is tests/data/findings/NAME.py)."""
    if "::" not in arg:
        return Path(arg)
    m = FINDING_TEST.match(arg)
    if m is None:
        raise GmemtestError(f"{arg}: a test becomes a selftest through its scenario: name a "
                            "scenario file, or a finding's test (tests/test_findings.py::"
                            "test_finding[NAME])")
    path = checkout / FINDINGS / f"{m['name']}.py"
    if not path.is_file():
        raise GmemtestError(f"{arg}: no finding {m['name']} in {FINDINGS}")
    return path


def _identity() -> tuple[str, str]:
    """Who signs the patch: git's configured user, else gmemtest."""
    def get(key: str) -> str:
        proc = subprocess.run(["git", "config", "--get", key], capture_output=True, text=True)
        return proc.stdout.strip()
    name, email = get("user.name"), get("user.email")
    return (name, email) if name and email else IDENTITY


def description(text: str) -> list[str]:
    """The scenario file's docstring: what the finding is, in the author's words."""
    m = re.match(r'\s*(?:#[^\n]*\n\s*)*"""(.*?)"""', text, re.S)
    return textwrap.dedent(m.group(1)).strip().splitlines() if m else []


def _wrap(lines: list[str], width: int) -> list[str]:
    """Paragraphs of ``lines`` wrapped at ``width``, blank lines kept."""
    out: list[str] = []
    for para in "\n".join(lines).split("\n\n"):
        words = " ".join(para.split())
        out += textwrap.wrap(words, width) if words else []
        out.append("")
    return out[:-1]


@dataclass(frozen=True)
class Request:
    """A scenario to write as a selftest, read and checked once: its file, its text, its steps,
    and the selftest's name."""

    path: Path
    text: str
    script: selftest_writer.Script
    name: str


def request(arg: str, name: str | None, checkout: Path) -> Request:
    """The scenario ``arg`` names (see :func:`scenario_of`), parsed, and the selftest's name:
    ``name``, or the scenario file's ending in _test; one line for anything wrong."""
    path = scenario_of(arg, checkout)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise GmemtestError(f"{path}: cannot read it ({e})") from None
    script = selftest_writer.read_script(text, str(path))
    chosen = name or path.stem.replace("-", "_")
    if not chosen.endswith("_test"):
        chosen += "_test"
    if not NAME.match(chosen):
        said = f"--name {name}" if name else f"{path.name} gives the name {chosen}"
        raise GmemtestError(f"{said}: a selftest's name is lower case with underscores and "
                            "ends in _test (as guest_memfd_test): give --name")
    return Request(path, text, script, chosen)


def generate(req: Request, tree: Path, out: Path) -> Generated:
    """Write the selftest of ``req`` as a patch against ``tree`` into ``out``."""
    scenario, text, script, name = req.path, req.text, req.script, req.name
    makefile = tree / KVM_DIR / "Makefile.kvm"
    if not makefile.is_file():
        raise GmemtestError(f"{tree}: no {KVM_DIR}/Makefile.kvm (not a kernel tree with KVM "
                            "selftests)")
    program = f"x86/{name}"
    if (tree / KVM_DIR / f"{program}.c").exists():
        raise GmemtestError(f"{tree}: {KVM_DIR}/{program}.c exists already: choose another "
                            "--name")
    about = description(text) or [f"A scenario of {len(script.steps)} steps."]
    route = ("KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd (in-place conversion)"
             if script.route == "gmem" else "KVM_SET_MEMORY_ATTRIBUTES on the VM")
    comment = [f"{name}: {about[0].rstrip('.')}", "", *_wrap(about[1:], 72), "",
               *_wrap([f"A KVM_X86_SW_PROTECTED_VM with {script.pages} pages of guest_memfd "
                       f"at 4 GiB, converted with {route}; after each step the test asserts "
                       "what the guest and the host must see."], 72)]
    source = selftest_writer.c_source(script, comment)
    lines = makefile.read_text().splitlines(keepends=True)
    last = max((i for i, ln in enumerate(lines) if ln.startswith("TEST_GEN_PROGS_x86 += x86/")),
               default=None)
    if last is None:
        raise GmemtestError(f"{makefile}: no `TEST_GEN_PROGS_x86 += x86/...` line to add to")
    lines.insert(last + 1, f"TEST_GEN_PROGS_x86 += {program}\n")
    user, email = _identity()
    subject = f"KVM: selftests: Add {name}"
    body = [*_wrap(about, 72), "",
            *_wrap([f"Written by gmemtest from the scenario {scenario.name} (its model of "
                    "guest memory under conversion says what each step must show); the test "
                    "skips where the kernel lacks the conversion route it uses."], 72)]
    patch = patchfile.format_patch(
        tree, {f"{KVM_DIR}/Makefile.kvm": "".join(lines), f"{KVM_DIR}/{program}.c": source},
        "\n".join([subject, "", *body]) + "\n", (user, email), out)
    checkpatch = tree / "scripts/checkpatch.pl"
    if not checkpatch.is_file():
        return Generated(patch, program, "no scripts/checkpatch.pl in the tree", False)
    # A new file makes checkpatch ask whether MAINTAINERS needs updating: not where an entry
    # covers the selftests' directory already (KVM's does).
    covered = (tree / "MAINTAINERS").is_file() and re.search(
        rf"^F:\s+{re.escape(str(KVM_DIR))}/?$", (tree / "MAINTAINERS").read_text(errors="replace"),
        re.M) is not None
    proc = subprocess.run(["perl", str(checkpatch), "--no-tree", "--strict",
                           *(["--ignore", "FILE_PATH_CHANGES"] if covered else []), str(patch)],
                          capture_output=True, text=True)
    (out / "checkpatch.txt").write_text(proc.stdout + proc.stderr)
    total = next((ln for ln in proc.stdout.splitlines() if ln.startswith("total:")),
                 f"checkpatch.pl exited {proc.returncode}")
    return Generated(patch, program, total, proc.returncode == 0)


def run(spec: KernelSpec, gen: Generated, *,
        limits: qemu.Limits) -> tuple[list[report.BootReport], str]:
    """Build ``spec`` with the generated patch on top and run the new selftest in both modes."""
    if spec.patches is None:
        raise GmemtestError(f"{spec.label()}: --run builds the kernel with the patch on top of "
                            "its patch set (kpatches/ or --patch-dir); on a tree of your own, "
                            f"apply {gen.patch} with git am and run vm-test")
    patches = replace(spec.patches, patches=(*spec.patches.patches, gen.patch),
                      name=f"{spec.patches.name} + {gen.patch.name}")
    node = f"tests/test_tree_selftests.py::test_tree_selftest[{gen.program}]"
    return vmtest.main_job(replace(spec, patches=patches), pytest_args=[node], limits=limits)
