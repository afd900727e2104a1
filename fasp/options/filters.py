"""ascp's filter rules (-E PATTERN, -N PATTERN): which entries of the transfer list are left out.

The grammar is IBM's ("Using filters to include and exclude files", ascp 3.7-4.4 documentation):

- The rules are applied in command-line order, -E and -N intermixed; the first whose pattern matches an entry
  decides (-N keeps it, -E leaves it out), an entry no rule matches is kept. An excluded directory takes its whole
  subtree with it (nothing below it is looked at); a kept one is walked, each entry below judged by the rules.
- A pattern is matched against the entry's path from the root of the transfer set: its destination path below
  DEST ('/'-separated, the source's own name first, ``dir/sub/file`` for ``dir`` sent). A leading ``/``
  anchors the pattern there (the whole path must match; it is not the system's root nor the docroot); without
  it, the pattern may match the path from any ``/`` on (so a bare name matches that name at any depth).
- ``*``, ``?`` and ``[...]`` (``[!...]``/``[^...]`` negated, ranges, ``[:class:]``) never match ``/``, nor a
  ``.`` that starts a name after a ``/`` of the pattern (a hidden entry must be named: ``/d/*`` skips ``d/.git``);
  ``\\`` quotes the next character. ``/**`` is ``*`` that also matches ``/`` and those dots: ``a/**/f`` matches
  ``a/f`` and ``a/d/e/f``, ``a/**`` everything below ``a`` but not ``a`` itself.
- A trailing ``/`` matches directories only. IBM matches a pattern ending in neither ``/`` nor ``*`` to files
  only; here it matches a directory of that name too, as this engine always did: ``-E cache`` keeps every
  ``cache`` directory behind rather than sending what was named (``cache/`` is IBM's spelling of that).
- An anchored -N rule also matches the directories on its way: ``-N /a/b/c`` matches ``a`` and ``a/b`` (up to a
  ``/**``), so ``-N /a/b/c -E '/**'`` sends that one file; -E has no such extension.

A rule is kept as aspera.conf writes one: ``"- PATTERN"`` (exclude) or ``"+ PATTERN"`` (include).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

EXCLUDE, INCLUDE = "- ", "+ "
MAX_RULES = 256
MAX_WILDCARDS = 3
"""Bounds on what a peer may ask a server to match each entry against: a pattern becomes a backtracking regex,
and ``*a*a*a*a*a*b`` took over a minute on one 255-byte name; with three runs of ``*`` or ``**`` at most, the worst
case measured is 25 ms (``/**/a/**/b`` on a 4,000-byte path 2,000 deep), and ``[^/]*`` runs on a name 3 ms."""
_WILDCARD_RUN = re.compile(r"(?<!\\)\*+")

_CLASSES = {
    "alnum": "a-zA-Z0-9",
    "alpha": "a-zA-Z",
    "blank": " \\t",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "\\x21-\\x7e",
    "lower": "a-z",
    "print": "\\x20-\\x7e",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    "space": " \\t\\n\\r\\f\\v",
    "upper": "A-Z",
    "xdigit": "0-9A-Fa-f",
}
"""POSIX bracket classes, as the ranges Python's re knows."""


@dataclass(frozen=True)
class Rule:
    include: bool
    pattern: str
    regex: re.Pattern[str]
    ancestors: re.Pattern[str] | None  # an anchored -N rule: the directories on its way

    def matches(self, rel: str, is_dir: bool) -> bool:
        subject = f"/{rel}/" if is_dir else f"/{rel}"
        if self.regex.match(subject):
            return True
        return is_dir and self.ancestors is not None and self.ancestors.match(subject) is not None


def rule(text: str) -> Rule:
    """A ``"- PATTERN"`` / ``"+ PATTERN"`` rule, compiled; ValueError for another form or an empty pattern."""
    sign, pattern = text[:2], text[2:]
    if sign not in (EXCLUDE, INCLUDE):
        raise ValueError(f"{text!r} is not a filter rule ('- PATTERN' or '+ PATTERN')")
    if not pattern:
        raise ValueError("an empty pattern")
    if len(_WILDCARD_RUN.findall(pattern)) > MAX_WILDCARDS:
        raise ValueError(f"more than {MAX_WILDCARDS} runs of * in one pattern")
    include = sign == INCLUDE
    anchored = pattern.startswith("/")
    body = _translate(pattern, dot_guard=anchored)
    regex = re.compile(("" if anchored else ".*/") + body + ("" if pattern.endswith("/") else "/?") + r"\Z", re.S)
    return Rule(include, pattern, regex, _ancestors(pattern) if include and anchored else None)


@functools.lru_cache(maxsize=64)
def compiled(rules: tuple[str, ...]) -> tuple[Rule, ...]:
    """The rules, compiled; ValueError for a bad one or more than MAX_RULES."""
    if len(rules) > MAX_RULES:
        raise ValueError(f"more than {MAX_RULES} filter rules")
    return tuple(rule(text) for text in rules)


def deciding(rules: Sequence[Rule], rel: str, is_dir: bool) -> Rule | None:
    """The first rule that matches the entry ``rel`` (a directory when ``is_dir``), or None: none does."""
    return next((r for r in rules if r.matches(rel, is_dir)), None)


def _ancestors(pattern: str) -> re.Pattern[str] | None:
    """The directories an anchored include rule passes through: each leading run of its components before
    the last one and before any component holding ``**``."""
    parts = pattern.strip("/").split("/")
    heads = []
    for count in range(1, len(parts)):
        if "**" in parts[count - 1]:
            break
        heads.append(_translate("/" + "/".join(parts[:count]) + "/", dot_guard=True))
    return re.compile("(?:" + "|".join(heads) + r")\Z", re.S) if heads else None


def _translate(pattern: str, *, dot_guard: bool) -> str:
    """The regex for ``pattern`` (module docstring's grammar), to be matched against ``/`` + the path; a
    wildcard just after a ``/`` (or at the start when ``dot_guard``) does not match a leading dot."""
    out: list[str] = []
    i, n = 0, len(pattern)
    at_name = dot_guard
    while i < n:
        c = pattern[i]
        guard = "(?!\\.)" if at_name else ""
        at_name = False
        if pattern.startswith("/**", i):
            i += 3
            while i < n and pattern[i] == "*":
                i += 1
            if pattern.startswith("/", i):
                out.append("/(?:.*/)?")
                i += 1
                at_name = True
            else:
                out.append("/.*" if i < n else "/.+")
        elif c == "/":
            out.append("/")
            i += 1
            at_name = True
        elif c == "*":
            while i < n and pattern[i] == "*":
                i += 1
            out.append(guard + "[^/]*")
        elif c == "?":
            out.append(guard + "[^/]")
            i += 1
        elif c == "[":
            bracket, i = _bracket(pattern, i)
            out.append(guard + bracket if bracket != "\\[" else bracket)
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _bracket(pattern: str, start: int) -> tuple[str, int]:
    """``[...]`` at ``start``: (its regex, the index after it); an unclosed ``[`` is a literal one."""
    i = start + 1
    negate = i < len(pattern) and pattern[i] in "!^"
    i += negate
    members: list[str] = []
    first = True
    while i < len(pattern) and (pattern[i] != "]" or first):
        first = False
        if pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            name = pattern[i + 2 : end] if end > 0 else ""
            if name not in _CLASSES:
                raise ValueError(f"unknown character class [:{name}:]")
            members.append(_CLASSES[name])
            i = end + 2
        elif pattern[i] == "-" and members and i + 1 < len(pattern) and pattern[i + 1] != "]":
            members.append("-")
            i += 1
        else:
            members.append(re.escape(pattern[i]))
            i += 1
    if i >= len(pattern):
        return "\\[", start + 1
    body = "".join(members)
    return (f"[^/{body}]" if negate else f"(?!/)[{body}]"), i + 1
