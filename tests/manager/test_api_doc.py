"""Walk the reference documentation (shared/spec/faspmanager-api.txt) and check faspmanager against it.

Nothing here is a copy of the documentation: classes, functions, signatures (argument names and
defaults), class and instance variables, ancestors and TransferOptions' option list are parsed from
the text, so a symbol the documentation gains and the library lacks fails this test.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

import pytest

import faspmanager as fm
from tests.support.programs import REPO_ROOT

DOC = REPO_ROOT.parent / "shared" / "spec" / "faspmanager-api.txt"


@dataclass
class DocClass:
    name: str
    methods: dict[str, str] = field(default_factory=dict)  # name -> argument text
    class_vars: list[str] = field(default_factory=list)
    instance_vars: list[str] = field(default_factory=list)
    ancestors: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)


def parse_doc(text: str):
    functions: dict[str, str] = {}
    classes: dict[str, DocClass] = {}
    lines = text.splitlines()
    current: DocClass | None = None
    section = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("class "):
            current = classes.setdefault(line.split()[1], DocClass(line.split()[1]))
            section = None
        elif line.startswith("def ") and line.endswith("("):
            name = line[4:-1]
            j = i + 1
            while not lines[j].strip():
                j += 1
            args = lines[j].strip()
            assert args.endswith(")"), f"unparsed signature of {name}: {args!r}"
            (current.methods if current else functions)[name] = args[:-1]
            i = j
        elif line in ("Class variables", "Instance variables", "Ancestors (in MRO)"):
            section = line
            if current is not None:
                current.body.append(line)
        elif line.startswith("var ") and current is not None:
            (current.class_vars if section == "Class variables" else current.instance_vars).append(line[4:].strip())
        elif line.strip().startswith("•") and section == "Ancestors (in MRO)":
            current.ancestors.append(line.strip().lstrip("•").strip())
        elif current is not None:
            current.body.append(line)
        i += 1
    return functions, classes


FUNCTIONS, CLASSES = parse_doc(DOC.read_text(encoding="utf-8"))


def parse_args(text: str) -> list[tuple[str, str | None]]:
    """``self, a, b=None, **kw`` -> [("self", None), ("a", None), ("b", "None"), ("**kw", None)]."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, default = part.partition("=")
        out.append((name.strip(), default.strip() if eq else None))
    return out


def actual_args(func) -> list[tuple[str, str | None]]:
    out = []
    for p in inspect.signature(func).parameters.values():
        prefix = {p.VAR_KEYWORD: "**", p.VAR_POSITIONAL: "*"}.get(p.kind, "")
        out.append((prefix + p.name, None if p.default is p.empty else repr(p.default)))
    return out


def test_the_documentation_was_found_and_parsed():
    assert len(CLASSES) >= 25 and "session" in FUNCTIONS
    assert CLASSES["Session"].methods and CLASSES["TransferOptions"].class_vars


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_documented_function(name):
    func = getattr(fm, name)
    assert actual_args(func) == parse_args(FUNCTIONS[name])


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_documented_class_methods_and_class_variables(name):
    doc = CLASSES[name]
    cls = getattr(fm, name)
    assert inspect.isclass(cls)
    for method, args in doc.methods.items():
        assert callable(getattr(cls, method, None)), f"{name}.{method} missing"
        assert actual_args(getattr(cls, method)) == parse_args(args), f"{name}.{method} signature"
    for var in doc.class_vars:
        assert hasattr(cls, var), f"{name}.{var} missing"
    mro = {f"{c.__module__}.{c.__name__}" for c in cls.__mro__} | {c.__name__ for c in cls.__mro__}
    for ancestor in doc.ancestors:
        assert ancestor in mro, f"{name} should derive from {ancestor}"


def _instances():
    order = fm.FileUpload("a", "u", "h", dest_pass="p")
    stream_order = fm.StreamUpload("u", "h", dest_pass="p")
    persistent_order = fm.PersistentUpload("u", "h", dest_pass="p")
    return {
        "FileUpload": order,
        "FileDownload": fm.FileDownload("a", "u", "h", source_pass="p"),
        "PersistentUpload": persistent_order,
        "PersistentDownload": fm.PersistentDownload("u", "h", source_pass="p"),
        "StreamUpload": stream_order,
        "HttpFallbackOptions": fm.HttpFallbackOptions(),
        "TransferOptions": fm.TransferOptions(),
        "Session": fm.Session(order),
        "PersistentSession": fm.PersistentSession(persistent_order),
        "StreamSession": fm.StreamSession(stream_order, 1024),
        "Stream": fm.Stream("dest", None, 1024),
        "TransferEvent": fm.TransferEvent(fm.TransferEventType.INIT, {}),
        "SessionResult": fm.SessionResult(fm.SessionState.FINISHED, {}, []),
    }


@pytest.mark.parametrize("name", sorted(n for n, c in CLASSES.items() if c.instance_vars))
def test_documented_instance_variables(name):
    instance = _instances()[name]
    for var in CLASSES[name].instance_vars:
        assert hasattr(instance, var), f"{name}().{var} missing"


def _documented_options() -> dict[str, str]:
    """TransferOptions' option list: name -> its description (the last one on a line holds the type)."""
    options: dict[str, str] = {}
    last = None
    body = CLASSES["TransferOptions"].body
    for line in body[:body.index("Ancestors (in MRO)")]:
        match = re.match(r"((?:[a-z_]+: )+)(.*)", line)
        if match:
            names = match.group(1).split(": ")[:-1]
            for name in names:
                options[name] = ""
            last = names[-1]
            options[last] = match.group(2)
        elif last and line.strip():
            options[last] += " " + line.strip()
        else:
            last = None
    return options


OPTIONS = _documented_options()


def test_documented_options_are_exactly_the_valid_options():
    assert len(OPTIONS) > 50
    assert sorted(OPTIONS) == sorted(fm.TransferOptions.valid_options())


def _wrong_value(description: str):
    """A value the documented type must refuse, or None when the text names no type."""
    if "(True or False)" in description:
        return "maybe"
    if re.search(r"\((int)\)", description):
        return "many"
    if re.search(r"\((str|string)\)", description):
        return 12345
    if "list of str" in description or "(list)" in description:
        return "not-a-list"
    if "constant" in description:
        return "no-such-constant"
    if "HttpFallbackOptions" in description:
        return {"http_port": 1}
    return None


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_documented_option_accepts_its_type_and_refuses_another(name):
    fm.TransferOptions(**{name: None})  # accepted by name
    wrong = _wrong_value(OPTIONS[name])
    if wrong is None:
        return
    with pytest.raises(ValueError, match=name):
        fm.TransferOptions(**{name: wrong})


def test_documented_defaults():
    defaults = fm.TransferOptions.defaults()
    for name, text in OPTIONS.items():
        match = re.search(r"Default: (\w+)", text)
        if match and match.group(1) in ("True", "False", "false", "true"):
            assert defaults[name] is (match.group(1).lower() == "true"), name
        elif match and match.group(1).isdigit():
            assert defaults[name] == int(match.group(1)), name
    assert defaults["encryption"] is True  # "Default: on"


def _examples() -> list[str]:
    """The documentation's code examples that run a session (the others are not meant to run)."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    examples = []
    for i, line in enumerate(lines):
        if line == "Example:":
            code = []
            for following in lines[i + 1:]:
                if following in ("Functions", "Ancestors (in MRO)", "Static methods"):
                    break
                code.append(following)
            if any("fm.session(" in c for c in code):
                examples.append("\n".join(code))
    return examples


@pytest.mark.timeout(60)
@pytest.mark.parametrize("code", _examples(), ids=lambda code: re.search(r"fm\.(\w+)\(", code).group(1))
def test_documentation_examples_run_unchanged(code, fake_ascp, tmp_path, monkeypatch, capsys):
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    contents = {}
    for name in ("myfile.txt", "file1.txt", "file2.txt", "some_file.txt"):
        contents[name] = f"{name} says hello\n".encode() * 1000
        (local / name).write_bytes(contents[name])
    monkeypatch.chdir(local)
    monkeypatch.setenv("FASPMANAGER_ASCP", str(fake_ascp))
    monkeypatch.setenv("FAKEASCP_REMOTE_ROOT", str(remote))
    exec(compile(code, "faspmanager-api.txt example", "exec"), {})
    assert capsys.readouterr().out == "True\n"
    landed = sorted(p.name for p in remote.iterdir())
    assert landed
    for name in landed:
        expected = contents["some_file.txt"] if name == "destination.txt" else contents[name]
        assert (remote / name).read_bytes() == expected
