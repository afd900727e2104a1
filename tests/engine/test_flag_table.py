"""The flag table (fasp/options/table.py) is the one place a flag is described: what follows from it holds."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable

import pytest

from fasp.options import asperaconf
from fasp.options.flags import Config, parse
from fasp.options.table import FLAGS, Flag
from faspmanager.codes import EngineError


def test_each_flag_is_one_entry_and_fills_a_real_config_field() -> None:
    names = [name for flag in FLAGS for name in flag.names]
    assert len(names) == len(set(names)) and len({f.key for f in FLAGS}) == len(FLAGS)
    fields = {f.name for f in dataclasses.fields(Config)}
    assert sorted(f.field for f in FLAGS if f.field is not None and f.field not in fields) == []
    assert {f.side for f in FLAGS} == {"client", "server", "both"}
    assert all(f.parse is None for f in FLAGS if not f.takes_value), "a switch has no value to parse"


BAD = "\x01not-a-value"


def _rejects(parse: Callable[[str], object]) -> bool:
    try:
        parse(BAD)
    except ValueError:
        return True
    return False


@pytest.mark.parametrize("flag", [f for f in FLAGS if f.parse and _rejects(f.parse)], ids=lambda f: f.names[0])
def test_a_bad_value_is_usage_error_8_naming_the_flag(flag: Flag) -> None:
    server = flag.side == "server"
    argv = ["--server", flag.names[0], BAD] if server else [flag.names[0], BAD, "a", "h:/b"]
    with pytest.raises(EngineError) as info:
        parse(argv, {})
    assert info.value.code == 8 and info.value.description.startswith(f"{flag.names[0]}: ")


def test_aspera_conf_schema_is_the_entries_elements() -> None:
    """The elements -f reads, as the table's ``conf`` entries give them (the subset asperaconf.py documents)."""
    flow = {
        "bandwidth": {
            "flow": {
                "target_rate": {"default": "{}.target_rate", "cap": "{}.rate_cap"},
                "min_rate": {"default": "{}.min_rate"},
                "policy": {"default": "{}.policy"},
            }
        }
    }

    def side(name: str, tree: object) -> object:
        return {k: side(name, v) for k, v in tree.items()} if isinstance(tree, dict) else str(tree).format(name)

    assert asperaconf.SCHEMA == {
        "file_system": {
            "access": {"paths": {"path": {"absolute": "docroot"}}},
            "overwrite": "overwrite",
            "partial_file_suffix": "partial_file_suffix",
            "file_checksum": "file_checksum",
            "read_block_size": "read_size",
            "write_block_size": "write_size",
        },
        "transfer": {
            "in": side("in", flow),
            "out": side("out", flow),
            "protocol_options": {"datagram_size": "datagram_size"},
            "encryption": {"cipher": "cipher"},
            "resume_policy": "resume",
        },
        "logging": {"log_dir": "local_log_dir"},
    }


def test_the_shared_words_are_defined_once() -> None:
    from fasp.datapath import rate
    from fasp.options import flags, vocabulary
    from fasp.server import users

    assert all(module.POLICIES is vocabulary.POLICIES for module in (rate, users, flags))


def test_asperaconf_does_not_import_the_parser() -> None:
    """The cycle options.py <-> conffile.py is gone: aspera.conf reads the table, the parser reads aspera.conf."""
    code = "import sys, fasp.options.asperaconf; print('fasp.options.flags' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
