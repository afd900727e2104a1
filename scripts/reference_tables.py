"""Extract the tables the tests check against from the reference documentation, so the repository stands alone.

The documentation (faspmanager-api.txt, the pdoc page of the faspmanager module, and ascp-cli.md, the ascp
command line) lives outside the repository; this script is run once per new edition of it and the tables it
writes are committed:

    python scripts/reference_tables.py PATH/TO/shared

writes tests/manager/spec_table.py (from spec/faspmanager-api.txt) and tests/engine/ascp_cli_table.py (from
design/ascp-cli.md).
"""

from __future__ import annotations

import pprint
import re
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
API_DOC = Path("spec") / "faspmanager-api.txt"
CLI_DOC = Path("design") / "ascp-cli.md"
SECTIONS = ("Class variables", "Instance variables", "Ancestors (in MRO)")


def parse_args(text: str) -> list[tuple[str, str | None]]:
    """``self, a, b=None, **kw`` -> [("self", None), ("a", None), ("b", "None"), ("**kw", None)]."""
    out: list[tuple[str, str | None]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, default = part.partition("=")
        out.append((name.strip(), default.strip() if eq else None))
    return out


def parse_api(text: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The module's functions (name -> arguments) and classes (methods, variables, ancestors, body text)."""
    functions: dict[str, Any] = {}
    classes: dict[str, dict[str, Any]] = {}
    lines = text.splitlines()
    current: dict[str, Any] | None = None
    section = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("class "):
            current = classes.setdefault(
                line.split()[1], {"methods": {}, "class_vars": [], "instance_vars": [], "ancestors": [], "body": []}
            )
            section = None
        elif line.startswith("def ") and line.endswith("("):
            name = line[4:-1]
            j = i + 1
            while not lines[j].strip():
                j += 1
            args = lines[j].strip()
            assert args.endswith(")"), f"unparsed signature of {name}: {args!r}"
            (current["methods"] if current else functions)[name] = parse_args(args[:-1])
            i = j
        elif line in SECTIONS:
            section = line
            if current is not None:
                current["body"].append(line)
        elif line.startswith("var ") and current is not None:
            current["class_vars" if section == "Class variables" else "instance_vars"].append(line[4:].strip())
        elif line.strip().startswith("•") and section == "Ancestors (in MRO)" and current is not None:
            current["ancestors"].append(line.strip().lstrip("•").strip())
        elif current is not None:
            current["body"].append(line)
        i += 1
    return functions, classes


def option_type(description: str) -> str | None:
    """The type an option's description names, or None when it names none."""
    if "(True or False)" in description:
        return "bool"
    if re.search(r"\((int)\)", description):
        return "int"
    if re.search(r"\((str|string)\)", description):
        return "str"
    if "list of str" in description or "(list)" in description:
        return "list"
    if "constant" in description:
        return "constant"
    if "HttpFallbackOptions" in description:
        return "HttpFallbackOptions"
    return None


def parse_options(body: list[str]) -> dict[str, dict[str, str | None]]:
    """TransferOptions' option list: name -> its documented type and default (the word after "Default:", or
    the suffix after 'Default suffix is')."""
    descriptions: dict[str, str] = {}
    last = None
    for line in body[: body.index("Ancestors (in MRO)")]:
        match = re.match(r"((?:[a-z_]+: )+)(.*)", line)
        if match:
            names = match.group(1).split(": ")[:-1]  # "a: b: text" documents a with no text of its own
            for name in names:
                descriptions[name] = ""
            last = names[-1]
            descriptions[last] = match.group(2)
        elif last and line.strip():
            descriptions[last] += " " + line.strip()
        else:
            last = None
    options: dict[str, dict[str, str | None]] = {}
    for name, text in descriptions.items():
        default = re.search(r'Default(?::| suffix is) "?(\.?\w+)', text)
        options[name] = {"type": option_type(text), "default": default.group(1) if default else None}
    return options


def parse_examples(text: str) -> list[str]:
    """The documentation's code examples that run a session (the others are not meant to run)."""
    lines = text.splitlines()
    examples = []
    for i, line in enumerate(lines):
        if line == "Example:":
            code = []
            for following in lines[i + 1 :]:
                if following in ("Functions", "Ancestors (in MRO)", "Static methods"):
                    break
                code.append(following)
            if any("fm.session(" in c for c in code):
                examples.append("\n".join(code))
    return examples


def documented_flags(text: str) -> list[str]:
    """Every flag spelled in a backtick span of the ascp command-line documentation."""
    flags: set[str] = set()
    for span in re.findall(r"`([^`]+)`", text):
        flags.update(re.findall(r"(?<![\w-])(--?[A-Za-z][-A-Za-z0-9]*)", span))
    return sorted(flags)


def _assignment(name: str, annotation: str, value: dict[str, Any] | list[Any]) -> str:
    """``NAME: annotation = {...}`` with one top-level entry per line, within 120 columns."""

    def literal(prefix: str, item: object) -> str:
        text = pprint.pformat(item, width=115 - len(prefix), sort_dicts=True)
        return "    " + prefix + text.replace("\n", "\n    " + " " * len(prefix)) + ",\n"

    if isinstance(value, dict):
        entries = "".join(literal(f"{key!r}: ", item) for key, item in sorted(value.items()))
        return f"{name}: {annotation} = {{\n{entries}}}\n"
    return f"{name}: {annotation} = [\n{''.join(literal('', item) for item in value)}]\n"


API_HEADER = f'''\
"""The faspmanager reference API as a table: what tests/manager/test_api_doc.py checks the library against.

Extracted by scripts/reference_tables.py from the reference documentation shared/{API_DOC.as_posix()}
(the pdoc page of the faspmanager module): FUNCTIONS from its "Functions" section, CLASSES from "Classes"
(each class's methods with their argument names and defaults, class and instance variables, ancestors),
OPTIONS from TransferOptions' "Options:" list (the type and default each description names), EXAMPLES
the "Example:" blocks that run a session. Generated: edit the documentation and regenerate, not this file.
"""
from __future__ import annotations

from typing import Any

Signature = list[tuple[str, str | None]]  # (argument, default as written or None), in order

'''

CLI_HEADER = f'''\
"""The ascp command line's documented flags: what tests/engine/test_options.py checks the parser against.

Extracted by scripts/reference_tables.py from the ascp command-line documentation shared/{CLI_DOC.as_posix()}:
every flag spelled in one of its backtick spans. Generated: regenerate, do not edit.
"""
from __future__ import annotations

'''


def api_table(text: str) -> str:
    functions, classes = parse_api(text)
    options = parse_options(classes["TransferOptions"]["body"])
    for cls in classes.values():
        del cls["body"]
    return (
        API_HEADER
        + _assignment("FUNCTIONS", "dict[str, Signature]", functions)
        + "\n"
        + _assignment("CLASSES", "dict[str, dict[str, Any]]", classes)
        + "\n"
        + _assignment("OPTIONS", "dict[str, dict[str, str | None]]", options)
        + "\n"
        + _assignment("EXAMPLES", "list[str]", parse_examples(text))
    )


def cli_table(text: str) -> str:
    return CLI_HEADER + _assignment("DOCUMENTED_FLAGS", "list[str]", documented_flags(text))


def main(argv: list[str]) -> None:
    shared = Path(argv[0])
    outputs = {
        REPO_ROOT / "tests" / "manager" / "spec_table.py": api_table((shared / API_DOC).read_text(encoding="utf-8")),
        REPO_ROOT / "tests" / "engine" / "ascp_cli_table.py": cli_table((shared / CLI_DOC).read_text(encoding="utf-8")),
    }
    for path, text in outputs.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
