"""Per-line, per-test coverage of the files a series touches, read with gcov from what the
guest kept (gmemtest.testing.gcov) and the build's .gcno files, and drawn on the series.

Every line of an instrumented file has one status: **run** (some test in some boot executed
it), **never run** (gcov knows it as code, and no test executed it), **no code** (it compiles
to nothing: a declaration, a brace, a comment) or **not compiled** (the preprocessor left it
out of this configuration, e.g. SNP's hooks). Each run line lists the tests, by boot, that ran
it. Lines of headers count where an instrumented object inlined them.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gmemtest import tool
from gmemtest.errors import GmemtestError

from . import page
from .patches import Patch

RUN, NEVER, NO_CODE, NOT_COMPILED = "run", "never run", "no code", "not compiled"


@dataclass
class FileCoverage:
    """One source file: its executable lines with their counts (summed over tests and boots),
    the tests that ran each, and its functions' line ranges."""

    counts: dict[int, int] = field(default_factory=dict)
    tests: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    functions: dict[str, tuple[int, int]] = field(default_factory=dict)
    excluded: set[int] = field(default_factory=set)  # code the preprocessor left out

    def status(self, line: int) -> str:
        if line in self.counts:
            return RUN if self.counts[line] > 0 else NEVER
        if line in self.excluded:
            return NOT_COMPILED
        return NO_CODE

    def function_at(self, line: int) -> str | None:
        for name, (start, end) in self.functions.items():
            if start <= line <= end:
                return name
        return None


@dataclass
class Coverage:
    """The files of a coverage run (paths relative to the kernel tree), and its boots."""

    files: dict[str, FileCoverage] = field(default_factory=lambda: defaultdict(FileCoverage))
    boots: dict[str, int] = field(default_factory=dict)  # boot label -> tests recorded

    def functions_run(self) -> set[str]:
        """Every instrumented function some test ran, as ``FILE: NAME()``."""
        return {f"{file}: {fn}()" for file, fc in self.files.items()
                for fn, (start, end) in fc.functions.items()
                if any(fc.counts.get(n, 0) for n in range(start, end + 1))}

    def tests_of_function(self, file: str, function: str) -> set[str]:
        """Every test (``boot: node id``) that ran a line of ``function`` in ``file``."""
        fc = self.files.get(file)
        if fc is None or function not in fc.functions:
            return set()
        start, end = fc.functions[function]
        return {t for line in range(start, end + 1) for t in fc.tests.get(line, ())}


def _gcov(gcno: Path, gcda: Path | None) -> dict[str, Any]:
    """gcov's JSON for one object: its .gcno, with the counters of ``gcda`` (None: zero)."""
    with tempfile.TemporaryDirectory(prefix="gmemtest-gcov-") as tmp:
        shutil.copy(gcno, Path(tmp) / gcno.name)
        if gcda is not None:
            shutil.copy(gcda, Path(tmp) / gcno.with_suffix(".gcda").name)
        proc = tool.run(["gcov", "--json-format", "--stdout", "-o", tmp,
                         Path(tmp) / gcno.with_suffix(".gcda").name], f"gcov of {gcno}")
    if not proc.stdout.strip():
        raise GmemtestError(f"gcov of {gcno}: no output")
    data: dict[str, Any] = json.loads(proc.stdout.splitlines()[0])
    return data


def _merge(cov: Coverage, data: dict[str, Any], build: Path, tree: Path,
           test: str | None) -> None:
    for f in data["files"]:
        path = os.path.normpath(build / f["file"])
        try:
            rel = str(Path(path).relative_to(tree))
        except ValueError:
            continue
        fc = cov.files[rel]
        for fn in f.get("functions", []):
            fc.functions.setdefault(fn["name"], (fn["start_line"], fn["end_line"]))
        for line in f["lines"]:
            n = line["line_number"]
            fc.counts[n] = fc.counts.get(n, 0) + line["count"]
            if test is not None and line["count"] > 0:
                fc.tests[n].add(test)


def read(build: Path, tree: Path, objects: list[str],
         boots: list[tuple[str, Path]]) -> Coverage:
    """The coverage of ``objects`` (source files of the tree, instrumented in the build
    directory ``build``) over ``boots``: (label, results directory) of each boot."""
    cov = Coverage()
    build, tree = build.resolve(), tree.resolve()  # gcov names the real directories
    gcnos = {o: build / Path(o).with_suffix(".gcno") for o in objects}
    missing = [str(g) for g in gcnos.values() if not g.is_file()]
    if missing:
        raise GmemtestError(f"not a coverage build: no {missing[0]} (build it with "
                            "`gmemtest coverage`)")
    for gcno in gcnos.values():  # every executable line, at zero
        _merge(cov, _gcov(gcno, None), build, tree, None)
    jobs: list[tuple[Path, Path, str]] = []
    for label, results in boots:
        index = results / "gcov" / "index.jsonl"
        if not index.is_file():
            raise GmemtestError(f"{results}: the boot kept no coverage (no gcov/index.jsonl)")
        recorded = [json.loads(line) for line in index.read_text().splitlines() if line]
        cov.boots[label] = len(recorded)
        for rec in recorded:
            for gcda in (results / "gcov" / str(rec["n"])).rglob("*.gcda"):
                source = _source_of(gcda, results / "gcov" / str(rec["n"]), build, gcnos)
                if source is not None:
                    jobs.append((gcnos[source], gcda, f"{label}: {rec['test']}"))
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        outputs = list(pool.map(lambda j: (_gcov(j[0], j[1]), j[2]), jobs))
    for data, test in outputs:
        _merge(cov, data, build, tree, test)
    return cov


def _source_of(gcda: Path, root: Path, build: Path, gcnos: dict[str, Path]) -> str | None:
    """The instrumented source whose counters ``gcda`` holds (the guest keeps the build
    directory's absolute path under gcov/)."""
    absolute = Path("/") / gcda.relative_to(root)
    for source, gcno in gcnos.items():
        if absolute.with_suffix(".gcno") == gcno:
            return source
    return None


def excluded_lines(build: Path, tree: Path, obj: str) -> set[int] | None:
    """The lines of code in ``obj``'s source that the preprocessor leaves out in this
    configuration (an #if branch not taken): its compile command (Kbuild's .cmd file) run with
    -E -C, read through the line markers; blank lines, comments and directives are not code.
    None when the build kept no compile command for it."""
    cmd_file = build / Path(obj).parent / f".{Path(obj).stem}.o.cmd"
    if not cmd_file.is_file():
        return None
    m = re.search(r"^savedcmd_\S+ := (.*)$", cmd_file.read_text(errors="replace"), re.M)
    if not m:
        return None
    command = re.sub(r"-Wp,-MMD,\S+", "", m.group(1))
    command = re.sub(r"\s-c\s+-o\s+\S+", " -E -C -o -", command)
    proc = subprocess.run(["sh", "-c", command], cwd=build, capture_output=True, text=True)
    if proc.returncode:
        return None
    name = Path(obj).name
    kept: set[int] = set()
    current, line = None, 0
    for text in proc.stdout.splitlines():
        mark = re.match(r'^# (\d+) "([^"]*)"', text)
        if mark:
            current, line = mark.group(2), int(mark.group(1))
            continue
        if current is not None and current.endswith("/" + name) and text.strip():
            kept.add(line)
        line += 1
    excluded: set[int] = set()
    directive = comment = False
    for n, text in enumerate((tree / obj).read_text(errors="replace").splitlines(), 1):
        stripped = text.strip()
        is_directive = directive or stripped.startswith("#")
        directive = is_directive and stripped.endswith("\\")
        is_comment = comment or stripped.startswith(("/*", "//"))
        if "/*" in stripped or "*/" in stripped:
            comment = stripped.rfind("/*") > stripped.rfind("*/")
        if stripped and not is_directive and not is_comment and n not in kept:
            excluded.add(n)
    return excluded


# --- drawn on the series --------------------------------------------------------------------

@dataclass
class Summary:
    run: int = 0
    never: int = 0
    no_code: int = 0
    not_compiled: int = 0
    superseded: int = 0  # changed again by a later patch: not in the tip as this patch wrote it

    def add(self, status: str) -> None:
        if status == RUN:
            self.run += 1
        elif status == NEVER:
            self.never += 1
        elif status == NOT_COMPILED:
            self.not_compiled += 1
        elif status == NO_CODE:
            self.no_code += 1
        else:
            self.superseded += 1

    @property
    def executable(self) -> int:
        return self.run + self.never

    def percent(self) -> str:
        return f"{100 * self.run / self.executable:.1f}%" if self.executable else "-"


SUPERSEDED = "changed later"


def line_status(cov: Coverage, file: str, tip: int | None) -> tuple[str, list[str]]:
    """An added line's status and the tests that ran it."""
    if tip is None:
        return SUPERSEDED, []
    fc = cov.files.get(file)
    if fc is None:
        return NO_CODE, []
    return fc.status(tip), sorted(fc.tests.get(tip, ()))


def summarize(cov: Coverage, patches: list[Patch],
              within: tuple[str, ...] = ("virt/kvm/", "arch/x86/kvm/")) -> dict[str, Any]:
    """Per patch and in all: the added lines' statuses; ``within``: the directories the
    headline figure counts."""
    per_patch = []
    total, headline = Summary(), Summary()
    for p in patches:
        s = Summary()
        for h in p.hunks:
            for line in h.lines:
                if line.kind != "+":
                    continue
                status, _ = line_status(cov, h.file, line.tip)
                s.add(status)
                total.add(status)
                if h.file.startswith(within):
                    headline.add(status)
        per_patch.append((p, s))
    return {"patches": per_patch, "total": total, "headline": headline, "within": within}


def to_json(cov: Coverage, patches: list[Patch], label: str) -> dict[str, Any]:
    sums = summarize(cov, patches)
    return {
        "kernel": label, "boots": cov.boots,
        "headline": {"within": list(sums["within"]), **vars(sums["headline"]),
                     "percent": sums["headline"].percent()},
        "patches": [{
            "index": p.index, "subject": p.subject, "commit": p.commit, **vars(s),
            "hunks": [{"file": h.file, "header": h.header, "lines": [
                {"kind": ln.kind, "text": ln.text, "tip": ln.tip,
                 **({"status": st, "tests": tests} if ln.kind == "+" else {})}
                for ln in h.lines for st, tests in [line_status(cov, h.file, ln.tip)]]}
                for h in p.hunks]} for p, s in sums["patches"]]}


@dataclass(frozen=True)
class DrawnLine:
    """A line the series adds, as a coverage document draws it: where it is at the tip, its
    text, its status (RUN, NEVER...) and the tests (``boot: node id``) that ran it."""

    file: str
    tip: int | None  # None: a later patch changed it
    text: str
    status: str
    tests: tuple[str, ...]


@dataclass(frozen=True)
class DrawnPatch:
    """A patch of the series and the lines it adds that are still at the tip."""

    index: int
    subject: str
    lines: tuple[DrawnLine, ...]


def drawn(doc: dict[str, Any]) -> list[DrawnPatch]:
    """The added lines of a coverage document (:func:`to_json`), patch by patch."""
    return [DrawnPatch(p["index"], p["subject"], tuple(
        DrawnLine(h["file"], ln["tip"], ln["text"], ln["status"], tuple(ln["tests"]))
        for h in p["hunks"] for ln in h["lines"] if ln["kind"] == "+"))
        for p in doc["patches"]]


def lcov(cov: Coverage, tree: Path, test_name: str = "gmemtest") -> str:
    """An lcov tracefile (genhtml, gcovr and CI coverage views read it): every executable line
    of every instrumented file, with its count over all boots, and each function."""
    out = [f"TN:{test_name}"]
    for file in sorted(cov.files):
        fc = cov.files[file]
        if not fc.counts:
            continue
        out.append(f"SF:{tree / file}")
        for name, (start, _) in sorted(fc.functions.items(), key=lambda kv: kv[1][0]):
            out.append(f"FN:{start},{name}")
        for name, (start, end) in sorted(fc.functions.items(), key=lambda kv: kv[1][0]):
            hits = max((fc.counts.get(n, 0) for n in range(start, end + 1)), default=0)
            out.append(f"FNDA:{hits},{name}")
        hit = sum(1 for s, e in fc.functions.values()
                  if any(fc.counts.get(n, 0) for n in range(s, e + 1)))
        out.append(f"FNF:{len(fc.functions)}")
        out.append(f"FNH:{hit}")
        for n in sorted(fc.counts):
            out.append(f"DA:{n},{fc.counts[n]}")
        out.append(f"LH:{sum(1 for c in fc.counts.values() if c)}")
        out.append(f"LF:{len(fc.counts)}")
        out.append("end_of_record")
    return "\n".join(out) + "\n"


def share(h: dict[str, Any]) -> str:
    """A document's headline (its ``headline``), in short: the added lines of code run."""
    return f"{h['run']} of {h['run'] + h['never']} run ({h['percent']})"


def headline(doc: dict[str, Any]) -> str:
    """A coverage document's figure in one sentence."""
    h = doc["headline"]
    return (f"{h['run']} of {h['run'] + h['never']} added lines of code under "
            f"{', '.join(h['within'])} run ({h['percent']}); {h['not_compiled']} not compiled "
            "in this configuration")


def headline_of(doc: dict[str, Any]) -> dict[str, Any]:
    """A coverage document's headline figures, as a matrix cell records them."""
    h: dict[str, Any] = doc["headline"]
    return h


def group_entry(doc: dict[str, Any], report: str) -> dict[str, Any]:
    """A matrix's coverage group (its cells' documents combined, :func:`combine`), as
    matrix.json records it: the headline, the lines run, where the report is."""
    return {"headline": doc["headline"], "run": sorted(line_keys(doc)), "report": report}


def group_notes(section: dict[str, Any]) -> list[str]:
    """A line per coverage group of a matrix: the series' added lines run, and the
    baseline's figure (an entry's ``previous``)."""
    notes = []
    for name, entry in section.items():
        line = f"coverage {name}: {share(entry['headline'])} of the series' added lines of code"
        previous = entry.get("previous")
        if previous:
            line += f"; the baseline: {share(previous)}"
        notes.append(line + f" ({entry['report']})")
    return notes


def markdown(doc: dict[str, Any]) -> str:
    """The Markdown report of a coverage document (:func:`to_json`, :func:`combine`)."""
    h = doc["headline"]
    boots = ", ".join(f"{b} ({n} tests)" for b, n in doc["boots"].items())
    lines = [f"# Coverage of the series: {doc['kernel']}", "", f"Boots: {boots}.", "",
             f"Lines the series adds under {', '.join(h['within'])} that compile to code: "
             f"**{h['run']} of {h['run'] + h['never']} run ({h['percent']})**; "
             f"{h['not_compiled']} not compiled in this configuration.", "",
             "| patch | run | never run | not compiled | no code | changed later | run of code |",
             "|---|---|---|---|---|---|---|"]
    for p in doc["patches"]:
        code = p["run"] + p["never"]
        pct = f"{100 * p['run'] / code:.1f}%" if code else "-"
        lines.append(f"| {p['index']} {p['subject']} | {p['run']} | {p['never']} | "
                     f"{p['not_compiled']} | {p['no_code']} | {p['superseded']} | {pct} |")
    lines += ["", "## Lines never run or not compiled", ""]
    for p in doc["patches"]:
        for hk in p["hunks"]:
            for ln in hk["lines"]:
                if ln["kind"] == "+" and ln["status"] in (NEVER, NOT_COMPILED):
                    lines.append(f"- {p['index']:02d} `{hk['file']}:{ln['tip']}` "
                                 f"{ln['status']}: `{ln['text'].strip()}`")
    return "\n".join(lines) + "\n"


# What the coverage page adds to the common style: lines that open their tests' list.
STYLE = """
pre.hunk span { display: block; white-space: pre; } .run { cursor: pointer; }
pre.hunk span.tests { display: none; background: #fff;
margin: 0 0 0 3em; border-left: 3px solid #6a6; padding: 2px 8px; font-size: 11px;
white-space: normal; }
pre.hunk span.open + span.tests { display: block; }
.key span { padding: 1px 6px; margin-right: 6px; }
"""
# A link to FILE:LINE (coverage.html#virt/kvm/guest_memfd.c:117) opens that line's tests.
# (after the browser's own jump to the anchor, which puts the line at the very top)
OPEN_LINE = ("var l = document.getElementById(decodeURIComponent(location.hash.slice(1)));"
             "if (l) { l.classList.add('open'); window.addEventListener('load', function () {"
             " setTimeout(function () { l.scrollIntoView({block: 'center'});"
             " window.scrollTo(0, window.scrollY); }, 0); }); }")
CLASSES = {RUN: "run", NEVER: "never", NO_CODE: "nocode", NOT_COMPILED: "notcompiled",
           SUPERSEDED: "later"}


def html_page(doc: dict[str, Any]) -> str:
    """Each patch as a diff, every added line marked by its status; hovering a run line
    names how many tests ran it, clicking it opens their list."""
    e = html.escape
    h = doc["headline"]
    n = len(doc["patches"])
    rows = []
    body = []
    ids: set[str] = set()
    for p in doc["patches"]:
        code = p["run"] + p["never"]
        pct = f"{100 * p['run'] / code:.1f}%" if code else "-"
        rows.append(f"<tr><td>{p['index']}</td><td><a href='#p{p['index']}'>"
                    f"{e(p['subject'])}</a></td><td>{p['run']}</td><td>{p['never']}</td>"
                    f"<td>{p['not_compiled']}</td><td>{p['no_code']}</td>"
                    f"<td>{p['superseded']}</td><td>{pct}</td></tr>")
        body.append(f"<h2 id='p{p['index']}'>{p['index']}/{n} {e(p['subject'])} "
                    f"<small>({p['run']} of {code} run)</small></h2>")
        for hk in p["hunks"]:
            body.append(f"<div class='file'>{e(hk['file'])}</div><pre class='hunk'>"
                        f"<span class='ctx'>{e(hk['header'])}</span>")
            for ln in hk["lines"]:
                if ln["kind"] == "+":
                    tests = ln["tests"]
                    where = f"{hk['file']}:{ln['tip']}" if ln["tip"] else \
                        "changed by a later patch"
                    title = f"{ln['status']}, {where}" + \
                        (f": {len(tests)} test(s), click for the list" if tests else "")
                    anchor = f" id='{e(where)}'" if ln["tip"] and where not in ids else ""
                    ids.add(where)
                    body.append(f"<span class='{CLASSES[ln['status']]}'{anchor} "
                                f"title='{e(title)}' onclick=\"this.classList.toggle('open')\">"
                                f"+{e(ln['text'])}</span>")
                    if tests:
                        body.append("<span class='tests'>" + "<br>".join(e(t) for t in tests)
                                    + "</span>")
                else:
                    cls = "del" if ln["kind"] == "-" else "ctx"
                    body.append(f"<span class='{cls}'>{e(ln['kind'] + ln['text'])}</span>")
            body.append("</pre>")
    key = "".join(f"<span class='{c}'>{e(s)}</span>" for s, c in CLASSES.items())
    boots = ", ".join(f"{b} ({k} tests)" for b, k in doc["boots"].items())
    return page.html_page("Coverage of the series", (
            f"<p>{e(doc['kernel'])}<br>boots: {e(boots)}</p>"
            f"<p><b>{h['run']} of {h['run'] + h['never']}</b> added lines of code under "
            f"{e(', '.join(h['within']))} run ({h['percent']}); {h['not_compiled']} not "
            f"compiled in this configuration.</p><p class='key'>{key}</p>"
            "<table class='sum'><tr><th>#</th><th>patch</th><th>run</th><th>never run</th>"
            "<th>not compiled</th><th>no code</th><th>changed later</th><th>run of code</th>"
            f"</tr>{''.join(rows)}</table>{''.join(body)}"), style=STYLE, script=OPEN_LINE)


# --- several boots' documents as one (cells of a matrix run apart) -------------------------------

RANK = {RUN: 4, NEVER: 3, NOT_COMPILED: 2, NO_CODE: 1, SUPERSEDED: 0}


def combine(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The documents (:func:`to_json`) of one kernel's coverage boots as one: a line is run
    where any boot ran it, with every boot's tests."""
    if not docs:
        raise GmemtestError("no coverage to combine")
    out: dict[str, Any] = json.loads(json.dumps(docs[0]))
    for doc in docs[1:]:
        out["boots"].update(doc["boots"])
        for pa, pb in zip(out["patches"], doc["patches"], strict=True):
            for ha, hb in zip(pa["hunks"], pb["hunks"], strict=True):
                for la, lb in zip(ha["lines"], hb["lines"], strict=True):
                    if la["kind"] == "+":
                        if RANK[lb["status"]] > RANK[la["status"]]:
                            la["status"] = lb["status"]
                        la["tests"] = sorted(set(la["tests"]) | set(lb["tests"]))
    head = Summary()
    for p in out["patches"]:
        s = Summary()
        for h in p["hunks"]:
            for ln in h["lines"]:
                if ln["kind"] == "+":
                    s.add(ln["status"])
                    if h["file"].startswith(tuple(out["headline"]["within"])):
                        head.add(ln["status"])
        p.update(vars(s))
    out["headline"].update(vars(head), percent=head.percent())
    return out


def line_keys(doc: dict[str, Any], status: str = RUN) -> set[str]:
    """The added lines of ``status`` in a document, each as ``FILE: text`` (``#n`` for the
    n-th same text in a file): a name that survives lines moving, for comparing runs."""
    seen: dict[str, int] = defaultdict(int)
    keys = set()
    for p in doc["patches"]:
        for h in p["hunks"]:
            for ln in h["lines"]:
                if ln["kind"] != "+":
                    continue
                key = f"{h['file']}: {ln['text'].strip()}"
                seen[key] += 1
                if ln["status"] == status:
                    keys.add(key if seen[key] == 1 else f"{key} #{seen[key]}")
    return keys
