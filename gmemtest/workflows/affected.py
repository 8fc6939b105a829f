"""`gmemtest vm-test --src TREE --affected BASE`: after an edit, the tests that cover the edited
functions, in both modes, instead of the whole suite.

The tree's coverage map (`gmemtest coverage --src TREE` keeps it: which tests ran a line of
each function) says which tests a function's change can affect. The edit is `git diff BASE` of
the tree's working copy; each changed line belongs to the function that holds it in the edited
file (found the kernel's way: a definition whose body opens with "{" at the margin and closes
with "}" there). A change outside every function the map knows covered (a new function, a
global, a header's macro, a function no test ran) runs the whole suite, and says why. Tests
that took over a minute in the coverage run (coverage.SLOWEST) are left out and named: the loop
is for a quick answer, and the whole suite still runs them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from gmemtest import tool
from gmemtest.errors import GmemtestError

from . import coverage

HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")


def functions(text: str) -> dict[str, tuple[int, int]]:
    """The functions defined in a C file in kernel style: name -> (first line, last line),
    1-based, from the line that names it to its closing brace."""
    lines = text.splitlines()
    found: dict[str, tuple[int, int]] = {}
    for i, line in enumerate(lines):
        if line.rstrip() != "{":
            continue
        head, start = "", i
        for j in range(i - 1, max(i - 8, -1), -1):
            if not lines[j].strip() or lines[j].startswith(("}", "#", "/*", " *")):
                break
            head, start = lines[j] + " " + head, j
            if re.match(r"^[A-Za-z_]", lines[j]) and "(" in lines[j]:
                # the return type on a line of its own ("static long\nname(...)")
                if j > 0 and re.match(r"^[A-Za-z_][\w\s*]*$", lines[j - 1]):
                    start = j - 1
                break
        m = re.search(r"(\w+)\s*\([^()]*(\([^()]*\)[^()]*)*\)\s*$", head.strip())
        end = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("}")), None)
        if m and end is not None:
            found[m.group(1)] = (start + 1, end + 1)
    return found


def changed_lines(tree: Path, base: str) -> dict[str, set[int]]:
    """Lines of the working copy that `git diff BASE` changes, by file (a deletion counts at
    the line after it)."""
    proc = tool.run(["git", "-C", tree, "diff", "-U0", "--no-color", base, "--"],
                    f"--affected {base}: git diff in {tree}")
    out: dict[str, set[int]] = {}
    file = None
    for line in proc.stdout.splitlines():
        if line.startswith("+++ "):
            file = line[6:] if line.startswith("+++ b/") else None
        elif file and (m := HUNK.match(line)):
            start, count = int(m.group(1)), int(m.group(2) or 1)
            out.setdefault(file, set()).update(range(start, start + max(count, 1)))
    return out


@dataclass
class Selection:
    """The tests an edit needs: their node ids, and why (function -> how many tests), or
    ``whole`` with the reason the whole suite runs."""

    tests: list[str] = field(default_factory=list)
    why: dict[str, int] = field(default_factory=dict)
    whole: str | None = None
    slow: list[str] = field(default_factory=list)  # covering, but left out (over SLOWEST)

    def describe(self) -> str:
        if self.whole:
            return f"the whole suite: {self.whole}"
        text = (f"{len(self.tests)} test(s), for the edited function(s) "
                + ", ".join(f"{f} ({n} tests)" for f, n in self.why.items()))
        if self.slow:
            text += (f"; left out, over {coverage.SLOWEST:.0f} s each in the coverage run: "
                     + ", ".join(self.slow))
        return text


def select(tree: Path, base: str) -> Selection:
    """The tests covering what `git diff BASE` changed in ``tree``."""
    kept = coverage.load_map(tree)
    if kept is None:
        raise GmemtestError(f"--affected: no coverage map of {tree}: run `gmemtest coverage "
                            f"--src {tree}` first")
    edits = changed_lines(tree, base)
    if not edits:
        return Selection(whole=f"the tree does not differ from {base}")
    tests: set[str] = set()
    sel = Selection()
    for file, lines in sorted(edits.items()):
        text = (tree / file).read_text(errors="replace") if (tree / file).is_file() else ""
        defined = functions(text)
        for line in sorted(lines):
            name = next((n for n, (s, e) in defined.items() if s <= line <= e), None)
            if name is None:
                return Selection(whole=f"{file}:{line} is outside every function")
            covering = kept.tests_of(file, name)
            if not covering:
                return Selection(whole=f"{name}() in {file} is a function no test was seen to "
                                       "run (or the map does not know it)")
            if name not in sel.why:
                ids = {t.split(": ", 1)[1] for t in covering}
                sel.why[name] = len(ids)
                tests |= ids
    slow = {t for t in tests if kept.slowest_seconds(t) > coverage.SLOWEST}
    if slow != tests:  # only slow tests cover the edit: they are the answer
        sel.slow = sorted(slow)
        tests -= slow
    sel.tests = sorted(tests)
    return sel
