"""The results of mutating a series: each mutant's outcome, scores per patch and per function,
the survivors as small diffs with the tests that ran their line, and the equivalents file.

Outcomes: **killed** (a test failed, or the kernel's health did: named), **timed out** (a limit
ended a boot: the mutant hangs the kernel, which a test run notices too), **survived** (every
test that runs the function passed in both modes), **did not build** (not counted),
**equivalent** (marked so in the marks file, argued from the code: the same behaviour; not
counted), **unobservable here** (marked so, naming what would observe it: TDX, SNP, a vCPU
racing the conversion...; counted, as not detected), and **not run** (past the budget). The
score is (killed + timed out) / (killed + timed out + survived + unobservable here): what this
platform cannot see is a gap in the score, shown, never dropped.

The marks file (kpatches/<base>/mutant-marks.toml) holds ``[[equivalent]]`` and
``[[unobservable]]`` tables, each with the mutant's id (gmemtest.vmtier.mutants: its line's
text and context), the change, and the reason; an unobservable one also ``observable_on``.
"""

from __future__ import annotations

import html
import itertools
import json
import tomllib
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from gmemtest.errors import GmemtestError

from . import page
from .shape import ListOf, Maybe, check, read_json


class MutantOutcome(StrEnum):
    """What became of a mutant (the module's docstring); the values are what the reports and
    mutants.jsonl hold."""

    KILLED = "killed"
    TIMED_OUT = "timed out"
    SURVIVED = "survived"
    UNOBSERVABLE = "unobservable here"
    NOT_BUILT = "did not build"
    EQUIVALENT = "equivalent"
    NOT_RUN = "not run"


KILLED, TIMED_OUT, SURVIVED = MutantOutcome.KILLED, MutantOutcome.TIMED_OUT, MutantOutcome.SURVIVED
NOT_BUILT, EQUIVALENT, NOT_RUN = (MutantOutcome.NOT_BUILT, MutantOutcome.EQUIVALENT,
                                  MutantOutcome.NOT_RUN)
UNOBSERVABLE = MutantOutcome.UNOBSERVABLE
OUTCOMES = tuple(MutantOutcome)


@dataclass
class Result:
    """One mutant and what became of it."""

    id: str
    file: str
    line: int
    function: str
    patch: int  # the series patch that added the line (1-based)
    subject: str
    operator: str
    original: str
    mutated: str
    outcome: MutantOutcome = NOT_RUN
    by: str | None = None  # killed: the test (mode: id) or kernel finding; else why
    tests: list[str] = field(default_factory=list)  # the tests that ran the line
    ran: int = 0  # tests run against it, both modes
    seconds: float = 0.0  # its build, then its boots from the first start (waits for a core in)

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Result:
        """A result as a report or mutants.jsonl holds it (its shape checked: SHAPE)."""
        return cls(**{**doc, "outcome": MutantOutcome(doc["outcome"])})


SHAPE = {"id": str, "file": str, "line": int, "function": str, "patch": int, "subject": str,
         "operator": str, "original": str, "mutated": str, "outcome": str, "by": Maybe(str),
         "tests": ListOf(str), "ran": int, "seconds": (int, float)}


def load_results(path: Path) -> dict[str, Result]:
    """The results a run appended to ``path`` (mutants.jsonl), by id: what --resume keeps."""
    out: dict[str, Result] = {}
    if not path.is_file():
        return out
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            check(doc, SHAPE, f"{path}:{n}")
        except (ValueError, GmemtestError) as e:
            raise GmemtestError(f"{path}:{n}: not a mutant's result ({e}); resume from "
                                "another directory or remove the line") from None
        if doc["outcome"] not in OUTCOMES:
            raise GmemtestError(f"{path}:{n}: {doc['outcome']!r} is no mutant outcome")
        out[doc["id"]] = Result.of(doc)
    return out


def append(path: Path, r: Result) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(asdict(r)) + "\n")


# --- the marks file ---------------------------------------------------------------------------

MARK_KINDS = {EQUIVALENT: "equivalent", UNOBSERVABLE: "unobservable"}  # outcome -> table name
MARK_KEYS = {EQUIVALENT: {"id", "mutant", "reason"},
             UNOBSERVABLE: {"id", "mutant", "reason", "observable_on"}}


@dataclass(frozen=True)
class Mark:
    """A mutant marked equivalent or unobservable here, with the reason (and, unobservable,
    what would observe it)."""

    id: str
    outcome: MutantOutcome  # EQUIVALENT or UNOBSERVABLE
    mutant: str  # the change, as the reports describe it
    reason: str
    observable_on: str | None = None

    def why(self) -> str:
        return self.reason if self.observable_on is None else \
            f"observable on {self.observable_on}: {self.reason}"


def load_marks(path: Path | None) -> dict[str, Mark]:
    """id -> mark, from a TOML file of ``[[equivalent]]`` and ``[[unobservable]]`` tables."""
    if path is None or not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise GmemtestError(f"{path}: not valid TOML ({e})") from None
    tables = {name: outcome for outcome, name in MARK_KINDS.items()}
    if set(data) - set(tables) or not all(isinstance(v, list) for v in data.values()):
        raise GmemtestError(f"{path}: expected only [[equivalent]] and [[unobservable]] tables")
    out: dict[str, Mark] = {}
    for name, entries in data.items():
        outcome = tables[name]
        for i, entry in enumerate(entries):
            keys = MARK_KEYS[outcome]
            if not isinstance(entry, dict) or set(entry) != keys or \
                    not all(isinstance(v, str) and v.strip() for v in entry.values()):
                raise GmemtestError(f"{path}: {name}[{i}]: expected {', '.join(sorted(keys))}, "
                                    "each a non-empty string")
            if entry["id"] in out:
                raise GmemtestError(f"{path}: {name}[{i}]: {entry['id']} is marked twice")
            out[entry["id"]] = Mark(entry["id"], outcome, entry["mutant"], entry["reason"],
                                    entry.get("observable_on"))
    return out


def write_marks(path: Path, marks: list[Mark], header: str) -> None:
    """The marks file, ``header`` (comment lines) first, then a table per mark."""
    lines = [header.rstrip("\n"), ""]
    for m in sorted(marks, key=lambda m: (m.outcome, m.mutant)):
        lines.append(f"[[{MARK_KINDS[m.outcome]}]]")
        lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in
                  (("id", m.id), ("mutant", m.mutant), ("reason", m.reason),
                   ("observable_on", m.observable_on)) if v is not None]
        lines.append("")
    path.write_text("\n".join(lines))


def header_of(path: Path) -> str:
    """The comment lines a marks file starts with."""
    lines = path.read_text().splitlines() if path.is_file() else []
    return "\n".join(ln for ln in itertools.takewhile(lambda ln: ln.startswith("#"), lines))


# --- scores and reports ------------------------------------------------------------------------

def score(results: list[Result]) -> tuple[int, int, str]:
    """(detected, counted, percent): killed or timed out, of those that built and ran or are
    unobservable here, and are not equivalent."""
    c = Counter(r.outcome for r in results)
    detected = c[KILLED] + c[TIMED_OUT]
    counted = detected + c[SURVIVED] + c[UNOBSERVABLE]
    return detected, counted, f"{100 * detected / counted:.1f}%" if counted else "-"


@dataclass(frozen=True)
class Shard:
    """Part ``k`` of ``n`` of a run: every n-th mutant of the deterministic order, from the
    k-th (1-based)."""

    k: int
    n: int

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"

    def of(self, items: list[Any]) -> list[Any]:
        return items[self.k - 1::self.n]


def parse_shard(text: str) -> Shard:
    """``K/N`` as a shard; one line for anything else."""
    k, slash, n = text.partition("/")
    if not (slash and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise GmemtestError(f"--shard {text}: expected K/N with 1 <= K <= N (2/3: the second "
                            "of three parts)")
    return Shard(int(k), int(n))


def headline(results: list[Result], label: str, shard: Shard | None = None) -> str:
    """The run in one line: how many mutants, the score, each outcome's count."""
    detected, counted, pct = score(results)
    return (f"mutants: {len(results)} of {label}" + (f" (shard {shard})" if shard else "")
            + f"; {detected} of {counted} detected ({pct})"
            + "".join(f", {n} {o}" for o, n in Counter(r.outcome for r in results).items()))


def to_json(results: list[Result], label: str, *, budget_left: int = 0,
            shard: Shard | None = None) -> dict[str, Any]:
    detected, counted, pct = score(results)
    by_patch: dict[int, list[Result]] = {}
    by_function: dict[str, list[Result]] = {}
    for r in results:
        by_patch.setdefault(r.patch, []).append(r)
        by_function.setdefault(f"{r.file}: {r.function}()", []).append(r)

    def row(rs: list[Result]) -> dict[str, Any]:
        d, n, p = score(rs)
        return {"mutants": len(rs), "detected": d, "counted": n, "score": p,
                **{o: sum(r.outcome == o for r in rs) for o in OUTCOMES}}

    return {"kernel": label, "shard": None if shard is None else str(shard),
            "mutants": len(results), "detected": detected, "counted": counted,
            "score": pct, "outcomes": dict(Counter(r.outcome for r in results)),
            "not_run": budget_left,
            "patches": {str(p): {"subject": rs[0].subject, **row(rs)}
                        for p, rs in sorted(by_patch.items())},
            "functions": {f: row(rs) for f, rs in sorted(by_function.items())},
            "results": [asdict(r) for r in results]}


def _diff(r: Result) -> list[str]:
    return [f"--- {r.file}:{r.line} ({r.function}, patch {r.patch:02d}, {r.operator})",
            f"-{r.original}", f"+{r.mutated}"]


def markdown(doc: dict[str, Any]) -> str:
    results = [Result.of(r) for r in doc["results"]]
    lines = [f"# Mutants of the series: {doc['kernel']}", "",
             f"**{doc['detected']} of {doc['counted']} detected ({doc['score']})**; "
             + ", ".join(f"{n} {o}" for o, n in doc["outcomes"].items()), "",
             "| patch | mutants | killed | timed out | survived | unobservable here | "
             "equivalent | did not build | not run | score |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p, row in doc["patches"].items():
        lines.append(f"| {p} {row['subject']} | {row['mutants']} | {row[KILLED]} | "
                     f"{row[TIMED_OUT]} | {row[SURVIVED]} | {row[UNOBSERVABLE]} | "
                     f"{row[EQUIVALENT]} | {row[NOT_BUILT]} | {row[NOT_RUN]} | {row['score']} |")
    lines += ["", "| function | mutants | detected | survived | score |", "|---|---|---|---|---|"]
    for f, row in doc["functions"].items():
        lines.append(f"| `{f}` | {row['mutants']} | {row['detected']} | {row[SURVIVED]} | "
                     f"{row['score']} |")
    survivors = [r for r in results if r.outcome == SURVIVED]
    lines += ["", f"## Survivors ({len(survivors)})", ""]
    for r in survivors:
        lines += [f"`{r.id}`: {r.ran} test(s) ran against it, none failed; "
                  f"the line was run by {len(r.tests)}: "
                  + ", ".join(f"`{t}`" for t in r.tests[:6])
                  + (" ..." if len(r.tests) > 6 else ""), "", "```diff", *_diff(r), "```", ""]
    for outcome, title in ((UNOBSERVABLE, "Unobservable here"), (EQUIVALENT, "Equivalent")):
        marked = [r for r in results if r.outcome == outcome]
        if marked:
            lines += [f"## {title} ({len(marked)})", ""]
            lines += [f"- `{r.id}` {r.file}:{r.line} `{r.mutated.strip()}`: {r.by}"
                      for r in marked]
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def html_page(doc: dict[str, Any]) -> str:
    """The scores per patch and per function, then every survivor as a diff with the tests
    that ran its line."""
    e = html.escape
    results = [Result.of(r) for r in doc["results"]]
    patches = "".join(
        f"<tr><td>{p}</td><td>{e(row['subject'])}</td><td>{row['mutants']}</td>"
        f"<td class='killed'>{row[KILLED]}</td><td class='timedout'>{row[TIMED_OUT]}</td>"
        f"<td class='survived'>{row[SURVIVED]}</td><td>{row[UNOBSERVABLE]}</td>"
        f"<td>{row[EQUIVALENT]}</td>"
        f"<td>{row[NOT_BUILT]}</td><td>{row[NOT_RUN]}</td><td>{row['score']}</td></tr>"
        for p, row in doc["patches"].items())
    functions = "".join(
        f"<tr><td><code>{e(f)}</code></td><td>{row['mutants']}</td><td>{row['detected']}</td>"
        f"<td>{row[SURVIVED]}</td><td>{row['score']}</td></tr>"
        for f, row in doc["functions"].items())
    survivors = []
    for r in (r for r in results if r.outcome == SURVIVED):
        tests = "".join(f"<li>{e(t)}</li>" for t in r.tests)
        survivors.append(
            f"<h3 id='{r.id}'>{e(r.file)}:{r.line} {e(r.function)}() <small>patch "
            f"{r.patch:02d}, {e(r.operator)}, {r.id}</small></h3><pre>"
            f"<span class='del'>-{e(r.original)}</span>\n<span class='add'>+{e(r.mutated)}"
            f"</span></pre><details><summary>{r.ran} test(s) ran against it, none failed; "
            f"{len(r.tests)} ran the line</summary><ul>{tests}</ul></details>")
    return page.html_page("Mutants of the series", (
            f"<p>{e(doc['kernel'])}</p><p><b>{doc['detected']} of {doc['counted']}</b> "
            f"detected ({doc['score']}); "
            + e(", ".join(f"{n} {o}" for o, n in doc["outcomes"].items())) + "</p>"
            "<table><tr><th>#</th><th>patch</th><th>mutants</th><th>killed</th><th>timed out"
            "</th><th>survived</th><th>unobservable here</th><th>equivalent</th>"
            "<th>did not build</th><th>not run</th>"
            f"<th>score</th></tr>{patches}</table><h2>Per function</h2><table><tr>"
            "<th>function</th><th>mutants</th><th>detected</th><th>survived</th><th>score</th>"
            f"</tr>{functions}</table><h2>Survivors ({len(survivors)})</h2>"
            + "".join(survivors) + "".join(
                f"<h2>{title} ({len(rs)})</h2><ul>" + "".join(
                    f"<li><code>{r.id}</code> {e(r.file)}:{r.line} <code>{e(r.mutated.strip())}"
                    f"</code>: {e(r.by or '')}</li>" for r in rs) + "</ul>"
                for title, rs in (("Unobservable here", [r for r in results
                                                         if r.outcome == UNOBSERVABLE]),
                                  ("Equivalent", [r for r in results
                                                  if r.outcome == EQUIVALENT])) if rs)))


# --- shards run apart, merged -------------------------------------------------------------------

REPORT = "mutation.json"  # in a run's directory: what merging reads of it
MERGED = {"kernel": str, "shard": Maybe(str), "results": ListOf(SHAPE)}  # what it reads
MISSING = object()  # a key the document lacks (no shape accepts it)


def load_report(directory: Path) -> tuple[str, Shard | None, list[Result]]:
    """A run's (or a shard's) kernel, shard and results, from its mutation.json; one line for
    a directory that holds none, or a document of another shape."""
    path = directory / REPORT
    doc = read_json(path, "a mutation report", f"{directory} is not a mutation run's directory "
                    f"(no {REPORT}): pass the directories `gmemtest mutate --shard K/N` wrote")
    try:
        if not isinstance(doc, dict):
            raise GmemtestError("expected an object")
        read = {k: doc.get(k, MISSING) for k in MERGED}
        check(read, MERGED, "mutation")
        shard = None if doc["shard"] is None else parse_shard(doc["shard"])
    except GmemtestError as e:
        raise GmemtestError(f"{path}: not a mutation report ({e})") from None
    results = [Result.of(r) for r in doc["results"]]
    bad = next((r for r in results if r.outcome not in OUTCOMES), None)
    if bad is not None:
        raise GmemtestError(f"{path}: {bad.outcome!r} is no mutant outcome")
    return doc["kernel"], shard, results


def merge(directories: list[Path]) -> tuple[str, list[Result]]:
    """The kernel and the results of the shards of one run, each shard once, all of them."""
    parts = [load_report(d) for d in directories]
    kernels = {k for k, _, _ in parts}
    if len(kernels) > 1:
        raise GmemtestError(f"the shards are of different kernels: {' and '.join(sorted(kernels))}")
    shards = [s for _, s, _ in parts]
    if any(s is None for s in shards):
        d = directories[shards.index(None)]
        raise GmemtestError(f"{d} is a whole run, not a shard: nothing to merge it with")
    counts = {s.n for s in shards if s is not None}
    if len(counts) > 1:
        raise GmemtestError(f"the shards split the run in different numbers of parts: "
                            f"{', '.join(str(s) for s in shards)}")
    n = counts.pop()
    seen = [s.k for s in shards if s is not None]
    twice = sorted({k for k in seen if seen.count(k) > 1})
    if twice:
        raise GmemtestError(f"shard {twice[0]}/{n} was given twice")
    missing = sorted(set(range(1, n + 1)) - set(seen))
    if missing:
        raise GmemtestError(f"shard {missing[0]}/{n} is missing")
    results = sorted((r for _, _, rs in parts for r in rs), key=lambda r: r.id)
    return kernels.pop(), results
