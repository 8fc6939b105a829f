"""Mutants of a series' C lines: small, realistic mistakes a patch could have made, one per
mutant, each a change of one line of the tip.

The operators (each names what it changes):

==========  ==================================================================================
negate      a relation negated: ``==``/``!=``, ``<``/``>=``, ``>``/``<=``; an ``if`` or ``while``
            condition inverted
boundary    a bound moved by one: ``<``/``<=``, ``>``/``>=``; ``+ 1`` and ``- 1`` dropped
logic       ``&&`` and ``||`` swapped; a ``!`` dropped
arith       ``+`` and ``-`` swapped, ``<<`` and ``>>`` swapped
bitwise     ``&`` and ``|`` swapped, a ``~`` dropped
constant    an integer literal changed (0 to 1, 1 to 0, n to n + 1)
errno       a returned or stored error code replaced (``-EFOO`` to ``-EINVAL``, or to 0)
return      a returned value replaced: ``true``/``false`` swapped, a variable by 0
call        a call statement removed
store       an assignment statement removed (a store that no longer happens)
==========  ==================================================================================

Literals, comments and preprocessor lines are left alone. A mutant's id is a digest of its
file, the line's text, the line's context (the nearest code lines above and below it) and the
change: it survives the line moving, and a mark (gmemtest.results.mutation) keyed by it stays
with that line, never passing to an identical line that a later patch adds elsewhere in the
file. Only where the text, its context and the change all repeat in a file does a count tell
the mutants apart.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

OPERATORS = ("negate", "boundary", "logic", "arith", "bitwise", "constant", "errno", "return",
             "call", "store")

NEGATE = {"==": "!=", "!=": "==", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}
BOUNDARY = {"<": "<=", "<=": "<", ">": ">=", ">=": ">"}
RELATION = re.compile(r"(?<![<>=!\-])(==|!=|<=|>=|<|>)(?![<>=])")
KEYWORDS = {"if", "while", "for", "switch", "return", "sizeof", "do", "else", "case", "goto",
            "break", "continue", "typeof", "__typeof__", "default"}


@dataclass(frozen=True)
class Mutant:
    """One change of one line: ``file``'s line ``line`` (1-based, at the tip) becomes
    ``mutated``. ``original`` is the line as the series has it."""

    file: str
    line: int
    original: str
    mutated: str
    operator: str
    context: str = ""  # the nearest code lines above and below, stripped (:func:`context`)
    repeat: int = 1  # the n-th mutant of the same text, context and change in the file

    @property
    def id(self) -> str:
        key = "\0".join((self.file, self.original.strip(), self.context, self.operator,
                         self.mutated.strip(), *([str(self.repeat)] if self.repeat > 1 else [])))
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    def describe(self) -> str:
        return f"{self.file}:{self.line} ({self.operator}): {self.original.strip()} -> " \
               f"{self.mutated.strip()}"


def code_mask(text: str) -> list[bool]:
    """Which characters of a line are code: not inside a string or character literal or a
    comment (a block comment is taken to close on the line)."""
    mask = [True] * len(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            for k in range(i, min(j + 1, n)):
                mask[k] = False
            i = j + 1
        elif text.startswith("//", i):
            for k in range(i, n):
                mask[k] = False
            break
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                mask[k] = False
            i = j
        else:
            i += 1
    return mask


def _balanced(s: str) -> bool:
    depth = 0
    for c in s:
        depth += {"(": 1, ")": -1}.get(c, 0)
        if depth < 0:
            return False
    return depth == 0


def _changes(text: str) -> Iterator[tuple[str, str]]:
    """(operator, mutated line) for each mutation of ``text``."""
    stripped = text.strip()
    if not stripped or stripped.startswith(("#", "/*", "*", "//")):
        return
    mask = code_mask(text)

    def code(m: re.Match[str]) -> bool:
        return all(mask[m.start():m.end()])

    def at(m: re.Match[str], new: str) -> str:
        return text[:m.start()] + new + text[m.end():]

    for m in RELATION.finditer(text):
        if not code(m) or (m.group(1) in "<>" and re.search(r"#\s*include", text)):
            continue
        yield "negate", at(m, NEGATE[m.group(1)])
        if m.group(1) in BOUNDARY:
            yield "boundary", at(m, BOUNDARY[m.group(1)])
    for m in re.finditer(r"\s*([+-])\s*1\b(?![.\w])", text):
        if code(m) and not re.search(r"[=(,]\s*$", text[:m.start()]):
            yield "boundary", at(m, "")
    cond = re.match(r"^(\s*(?:if|while)\s*\()(.*)(\)\s*\{?\s*)$", text)
    # (a condition that is one relation, or starts with "!", is negated above or below)
    if cond and _balanced(cond.group(2)) and all(mask) and not cond.group(2).startswith("!") \
            and not (len(RELATION.findall(cond.group(2))) == 1
                     and not re.search(r"&&|\|\|", cond.group(2))):
        yield "negate", cond.group(1) + "!(" + cond.group(2) + ")" + cond.group(3)
    for m in re.finditer(r"&&|\|\|", text):
        if code(m):
            yield "logic", at(m, "||" if m.group() == "&&" else "&&")
    for m in re.finditer(r"(?<=\w|\)) ([+-]) (?=[\w(])", text):
        if code(m) and not re.match(r"1\b", text[m.end():]):
            yield "arith", at(m, f" {'-' if m.group(1) == '+' else '+'} ")
    for m in re.finditer(r"<<(?!=)|>>(?!=)", text):
        if code(m):
            yield "arith", at(m, ">>" if m.group() == "<<" else "<<")
    for m in re.finditer(r"(?<=[\w)]) ([&|]) (?=[\w(~!])", text):
        if code(m):
            yield "bitwise", at(m, f" {'|' if m.group(1) == '&' else '&'} ")
    for m in re.finditer(r"~(?=[\w(])", text):
        if code(m):
            yield "bitwise", at(m, "")
    for m in re.finditer(r"!(?!=)", text):
        if code(m):
            yield "logic", at(m, "")
    for m in re.finditer(r"(?<![\w.])(0x[0-9a-fA-F]+|\d+)([uUlL]*)(?![\w.])", text):
        if not code(m) or re.search(r"-E[A-Z0-9]*$|[+-]\s*$", text[:m.start()]) \
                and m.group(1) == "1" or re.search(r"-E[A-Z0-9]*$", text[:m.start()]):
            continue
        value = int(m.group(1), 0)
        new = 1 if value == 0 else 0 if value == 1 else value + 1
        literal = hex(new) if m.group(1).lower().startswith("0x") else str(new)
        yield "constant", at(m, literal + m.group(2))
    for m in re.finditer(r"-E[A-Z][A-Z0-9]+\b", text):
        if code(m):
            yield "errno", at(m, "-EFAULT" if m.group() == "-EINVAL" else "-EINVAL")
            if stripped.startswith("return"):
                yield "errno", at(m, "0")
    ret = re.match(r"^(\s*return\s+)(.+?)(;\s*)$", text)
    if ret and all(mask[ret.start(2):ret.end(2)]):
        returned = ret.group(2)
        swap = {"true": "false", "false": "true"}.get(returned)
        if swap:
            yield "return", ret.group(1) + swap + ret.group(3)
        elif re.fullmatch(r"[a-z_]\w*", returned):
            yield "return", ret.group(1) + "0" + ret.group(3)
    indent = text[:len(text) - len(text.lstrip())]
    call = re.match(r"^\s*([A-Za-z_][\w>.\-]*)\s*\((.*)\);\s*$", text)
    if call and call.group(1) not in KEYWORDS and _balanced(call.group(2)) \
            and "=" not in text[:call.start(2)] and all(mask):
        yield "call", indent + ";"
    store = re.match(r"^\s*\*?[A-Za-z_][\w>.\-\[\]]*\s*(=|\|=|&=|\+=|-=|<<=|>>=)\s*[^=].*;\s*$",
                     text)
    if store and not stripped.startswith("return") and all(mask):
        yield "store", indent + ";"


def context(lines: list[str], line: int) -> str:
    """The code around ``lines``' line ``line`` (1-based): the nearest non-blank lines above and
    below it, stripped."""
    above = next((t.strip() for t in reversed(lines[:line - 1]) if t.strip()), "")
    below = next((t.strip() for t in lines[line:] if t.strip()), "")
    return f"{above}\n{below}"


def of_line(file: str, line: int, text: str, seen: dict[str, int] | None = None, *,
            around: str = "") -> list[Mutant]:
    """Every mutant of ``text``, ``file``'s line ``line``, whose context is ``around``;
    ``seen`` numbers repeats of the same text, context and change in the file (share one
    dict per file)."""
    seen = {} if seen is None else seen
    out = []
    for operator, mutated in _changes(text):
        if mutated == text:
            continue
        key = f"{text.strip()}\0{around}\0{operator}\0{mutated.strip()}"
        seen[key] = seen.get(key, 0) + 1
        out.append(Mutant(file, line, text, mutated, operator, around, seen[key]))
    return out
