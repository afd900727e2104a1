"""Check faspmanager against its reference documentation (shared/spec/faspmanager-api.txt), through spec_table.py.

Nothing here is written by hand from the documentation: classes, functions, signatures (argument names and
defaults), class and instance variables, ancestors, TransferOptions' options with their types and defaults, and
the examples come from the table scripts/reference_tables.py extracts from the text, so a symbol a new edition
of the documentation gains and the library lacks fails this test once the table is regenerated.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import faspmanager as fm
from tests.manager.spec_table import CLASSES, EXAMPLES, FUNCTIONS, OPTIONS


def actual_args(func: Callable[..., object]) -> list[tuple[str, str | None]]:
    out = []
    for p in inspect.signature(func).parameters.values():
        prefix = "**" if p.kind is p.VAR_KEYWORD else "*" if p.kind is p.VAR_POSITIONAL else ""
        out.append((prefix + p.name, None if p.default is p.empty else repr(p.default)))
    return out


def test_the_table_holds_the_documentation() -> None:
    assert len(CLASSES) >= 25 and "session" in FUNCTIONS
    assert CLASSES["Session"]["methods"] and CLASSES["TransferOptions"]["class_vars"]


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_documented_function(name: str) -> None:
    func = getattr(fm, name)
    assert actual_args(func) == FUNCTIONS[name]


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_documented_class_methods_and_class_variables(name: str) -> None:
    doc = CLASSES[name]
    cls = getattr(fm, name)
    assert inspect.isclass(cls)
    for method, args in doc["methods"].items():
        assert callable(getattr(cls, method, None)), f"{name}.{method} missing"
        assert actual_args(getattr(cls, method)) == args, f"{name}.{method} signature"
    for var in doc["class_vars"]:
        assert hasattr(cls, var), f"{name}.{var} missing"
    mro = {f"{c.__module__}.{c.__name__}" for c in cls.__mro__} | {c.__name__ for c in cls.__mro__}
    for ancestor in doc["ancestors"]:
        assert ancestor in mro, f"{name} should derive from {ancestor}"


def test_event_types_are_exactly_the_documented_ones() -> None:
    """Not only the documented members: no others either, so a listener that dispatches over the documented
    ones covers every type (the engine's extra events are ExtraEventType, heard only on opting in)."""
    assert sorted(fm.TransferEventType.__members__) == sorted(CLASSES["TransferEventType"]["class_vars"])


def _instances() -> dict[str, object]:
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
        "Stream": fm.Stream("dest", None, 1024),  # type: ignore[arg-type]  # never sent through
        "TransferEvent": fm.TransferEvent(fm.TransferEventType.INIT, {}),
        "SessionResult": fm.SessionResult(fm.SessionState.FINISHED, {}, []),
    }


@pytest.mark.parametrize("name", sorted(n for n, c in CLASSES.items() if c["instance_vars"]))
def test_documented_instance_variables(name: str) -> None:
    instance = _instances()[name]
    for var in CLASSES[name]["instance_vars"]:
        assert hasattr(instance, var), f"{name}().{var} missing"


def test_documented_options_are_exactly_the_valid_options() -> None:
    assert len(OPTIONS) > 50
    assert sorted(OPTIONS) == sorted(fm.TransferOptions.valid_options())


WRONG_VALUE: dict[str, object] = {  # a value each documented option type must refuse
    "bool": "maybe",
    "int": "many",
    "str": 12345,
    "list": "not-a-list",
    "constant": "no-such-constant",
    "HttpFallbackOptions": {"http_port": 1},
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_documented_option_accepts_its_type_and_refuses_another(name: str) -> None:
    fm.TransferOptions(**{name: None})  # accepted by name
    kind = OPTIONS[name]["type"]
    if kind is None:  # the documentation names no type
        return
    wrong = WRONG_VALUE[kind]
    with pytest.raises(ValueError, match=name):
        fm.TransferOptions(**{name: wrong})


def test_documented_defaults() -> None:
    defaults = fm.TransferOptions.defaults()
    for name, option in OPTIONS.items():
        default = option["default"]
        if default in ("True", "False", "false", "true"):
            assert defaults[name] is (default.lower() == "true"), name
        elif default is not None and default.isdigit():
            assert defaults[name] == int(default), name
        elif default is not None and default.startswith("."):  # a suffix, as written
            assert defaults[name] == default, name
    assert defaults["encryption"] is True  # "Default: on"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("code", EXAMPLES, ids=lambda code: re.findall(r"fm\.(\w+)\(", code)[0])
def test_documentation_examples_run_unchanged(
    code: str, fake_ascp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
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


def test_the_public_names_load_on_first_use() -> None:
    """``import faspmanager`` loads no orders or sessions (the engine imports faspmanager.codes on every start);
    each public name still comes from its home, and ``faspmanager.session`` stays the function when the
    submodule of that name loads afterwards."""
    code = (
        "import sys, types, faspmanager as fm\n"
        "print('faspmanager.session' in sys.modules, 'faspmanager.orders' in sys.modules)\n"
        "from faspmanager.session import MgmtConnection\n"
        "print(isinstance(fm.session, types.FunctionType), fm.Session.__module__, fm.orders.__name__)\n"
        "from faspmanager import *\n"
        "print(all(n in globals() for n in fm.__all__))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split("\n") == ["False False", "True faspmanager.session faspmanager.orders", "True", ""]
