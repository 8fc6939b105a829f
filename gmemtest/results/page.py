"""The one shape of every report gmemtest writes: a self-contained HTML page on one style sheet,
and the tables of the terminal and of Markdown. Each report (matrix, diff, walk, coverage,
mutants, bench) says what is in it; how a page, a table or a cell looks is said here."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
h2 { font-size: 1.1em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: right; vertical-align: top; }
th:first-child, td:first-child, td.verdict, td.text { text-align: left; }
tr.pass td.verdict, td.good { background: #dfd; } tr.fail td.verdict, td.bad { background: #fdd; }
td.n0 { color: #aaa; } .regr, p.fail { background: #fdd; padding: .5em; }
details { margin: .5em 0; } pre { background: #f6f6f6; padding: .5em; overflow-x: auto; }
pre.diff, pre.hunk { font-size: 12px; line-height: 1.35; margin: .3em 0 1em; padding: 4px 8px; }
.del { color: #a33; } .add { color: #262; } .ctx { color: #777; }
.killed, .run { background: #d4f5d4; } .survived, .never { background: #ffd0d0; }
.timedout, .later { background: #fff4c0; } .nocode { background: #f3f3f3; }
.notcompiled { background: #e8e0f8; }
"""


def html_page(title: str, body: str, *, style: str = "", script: str = "") -> str:
    """A whole page: ``title`` as its title and heading, the time it was written, ``body``;
    ``style``: what this report adds to the common style sheet."""
    e = html.escape
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
            f"<style>{STYLE}{style}</style></head><body><h1>{e(title)}</h1>"
            f"<p>{e(time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))}</p>\n{body}"
            + (f"<script>{script}</script>" if script else "") + "</body></html>\n")


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], *,
               cls: str = "") -> str:
    """A table of plain text cells (escaped here)."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{f' class={cls!r}' if cls else ''}><tr>{head}</tr>{body}</table>"


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, indent: str = "",
               last_free: bool = False, numbers: bool = False, rule: bool = True) -> list[str]:
    """The terminal's table: columns padded to their widest cell, a rule under the header;
    ``last_free``: the last column (a sentence) is not padded; ``numbers``: the columns after
    the first are aligned right."""
    grid = [list(header), *[list(r) for r in rows]]
    n = len(header) - 1 if last_free else len(header)
    widths = [max(len(r[i]) for r in grid) for i in range(n)]

    def pad(i: int, c: str, w: int) -> str:
        return c.rjust(w) if numbers and i else c.ljust(w)

    lines = [indent + "  ".join([*(pad(i, c, w) for i, (c, w) in
                                   enumerate(zip(r[:n], widths, strict=True))),
                                 *r[n:]]).rstrip() for r in grid]
    if rule:
        lines.insert(1, indent + "-" * max(len(ln) - len(indent) for ln in lines))
    return lines


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table; a ``|`` in a cell is escaped."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows)]
