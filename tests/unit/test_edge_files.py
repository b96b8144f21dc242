"""Edge inputs: the classic targets file, the GUID file, the TOML config."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest

from lbmgmt.configfile import ConfigError
from lbmgmt.edge.config import load_edge_config
from lbmgmt.edge.identity import GuidFileError, load_or_create_guid
from lbmgmt.edge.monitors import ManualMonitor, TcpConnectionsMonitor
from lbmgmt.edge.targets import load_targets, parse_targets
from lbmgmt.statedir import default_file, state_directory
from lbmgmt.status import SharedKey


def test_targets_classic_format():
    targets = parse_targets(
        "# balancers\n"
        "\n"
        "10.0.0.1,1934,023D4FB4F5E4A1B2C3\n"
        "  lb2.example.net , 1935 , key,with,commas,too   # prod\n"
        "[::1],1934,k#notacomment-either\n"
        "::1,1934,v6key-0123456789ab\n")
    assert [(t.host, t.port, t.line) for t in targets] == [
        ("10.0.0.1", 1934, 3), ("lb2.example.net", 1935, 4), ("::1", 1934, 5), ("::1", 1934, 6)]
    assert targets[0].key == SharedKey("023D4FB4F5E4A1B2C3")
    assert targets[1].key == SharedKey("key,with,commas,too")
    assert targets[2].key == SharedKey("k#notacomment-either")
    assert str(targets[3]) == "[::1]:1934"


@pytest.mark.parametrize("line, field", [
    ("10.0.0.1,1934", "line"),
    ("10.0.0.1", "line"),
    (",1934,key-0123456789abcdef", "host"),
    ("10.0.0.1,port,key-0123456789abcdef", "port"),
    ("10.0.0.1,70000,key-0123456789abcdef", "port"),
    ("10.0.0.1,1934,", "key"),
    ("10.0.0.1,1934,fifteen-chars!!", "key"),
])
def test_targets_bad_line_names_file_line_and_field(line, field, tmp_path):
    path = tmp_path / "targets.txt"
    path.write_text(f"# ok\n10.0.0.2,1934,k-0123456789abcdef\n{line}\n")
    with pytest.raises(ConfigError) as err:
        load_targets(path)
    assert err.value.line == 3 and err.value.field == field
    assert str(err.value).startswith(f"{path}:3: {field}: ")


def test_targets_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read targets file"):
        load_targets(tmp_path / "nope.txt")


def test_guid_made_once_kept_and_reset_by_deleting(tmp_path):
    path = tmp_path / "sub" / "edge.guid"
    first = load_or_create_guid(path)
    assert path.read_text().strip() == str(first)
    assert load_or_create_guid(path) == first
    os.remove(path)
    assert load_or_create_guid(path) != first


def test_corrupt_guid_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "edge.guid"
    path.write_text("not-a-guid\n")
    with pytest.raises(GuidFileError, match=f"{path}: not a GUID.*delete the file"):
        load_or_create_guid(path)
    path.write_text(f"  {uuid.UUID(int=5)}\n")
    assert load_or_create_guid(path) == uuid.UUID(int=5)


def write(tmp_path, text):
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return path


def test_edge_config_defaults_env_and_relative_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_HOST", "edge7.example.net")
    cfg = load_edge_config(write(tmp_path, '[edge]\nredirect_address = "${EDGE_HOST}:1935"\n'))
    assert cfg.redirect_address == "edge7.example.net:1935"
    assert cfg.targets_file == tmp_path / "targets.txt"
    # the GUID: in the state directory, named for the config, never beside it
    assert cfg.guid_file == default_file(tmp_path / "edge.toml", ".guid")
    assert cfg.guid_file.parent == state_directory()
    assert not cfg.guid_file.is_relative_to(tmp_path)
    assert cfg.message_interval_ms == 2500 and cfg.capacity is None
    assert isinstance(cfg.monitor, ManualMonitor)
    set_relative = load_edge_config(write(tmp_path, '[edge]\nredirect_address = "a"\n'
                                                    'guid_file = "ids/edge.guid"\n'))
    assert set_relative.guid_file == tmp_path / "ids" / "edge.guid"  # as set: by the config


@pytest.mark.parametrize("env,expected", [
    ({"STATE_DIRECTORY": "/var/lib/lbmgmt:/var/lib/other"}, "/var/lib/lbmgmt"),
    ({"STATE_DIRECTORY": "/var/lib/lbmgmt", "XDG_STATE_HOME": "/x"}, "/var/lib/lbmgmt"),
    ({"XDG_STATE_HOME": "/home/op/.state"}, "/home/op/.state/lbmgmt"),
    ({"XDG_STATE_HOME": "relative", "STATE_DIRECTORY": "also"}, "HOME"),
    ({}, "HOME"),
])
def test_the_state_directory_is_systemds_then_xdgs_then_the_home_default(env, expected):
    home = Path.home() / ".local" / "state" / "lbmgmt"
    assert state_directory(env) == (home if expected == "HOME" else Path(expected))
    name = default_file(Path("/etc/lbmgmt/edge-b.toml"), ".guid", env).name
    assert re.fullmatch(r"edge-b-[0-9a-f]{8}\.guid", name)


def test_two_configs_of_one_name_never_share_a_guid_file(tmp_path):
    """Two edges set up alike on one host (edge1/edge.toml, edge2/edge.toml)."""
    one = default_file(tmp_path / "edge1" / "edge.toml", ".guid")
    two = default_file(tmp_path / "edge2" / "edge.toml", ".guid")
    assert one != two and one.parent == two.parent
    assert one == default_file(tmp_path / "edge1" / "edge.toml", ".guid")  # and stays


async def test_an_edge_makes_its_guid_in_a_state_directory_that_does_not_exist_yet(
        tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    path = default_file(tmp_path / "edge.toml", ".guid")
    guid = load_or_create_guid(path)
    made = tmp_path / "state" / "lbmgmt"
    assert path.parent == made and path.read_text().strip() == str(guid)
    assert made.stat().st_mode & 0o777 == 0o700


def test_edge_config_tcp_monitor(tmp_path):
    cfg = load_edge_config(write(tmp_path, '[edge]\nredirect_address = "a"\ncapacity = 300\n'
                                           '[monitor]\ntype = "tcp-connections"\n'
                                           'ports = [1935, 8080]\n'))
    assert isinstance(cfg.monitor, TcpConnectionsMonitor)
    assert cfg.monitor.ports == {1935, 8080} and cfg.capacity == 300


def test_edge_config_monitor_by_module_path(tmp_path):
    cfg = load_edge_config(write(tmp_path, '[edge]\nredirect_address = "a"\n[monitor]\n'
                                           'type = "lbmgmt.edge.monitors:ManualMonitor"\n'
                                           'load = 4\n'))
    assert isinstance(cfg.monitor, ManualMonitor) and cfg.monitor.load == 4


@pytest.mark.parametrize("text, line, field, message", [
    ('[edge]\nredirect_address = "${NO_SUCH_VAR_X}"\n', 2, "edge.redirect_address",
     "NO_SUCH_VAR_X is not set"),
    ('[edge]\nredirect_address = "a"\nmessage_interval_ms = "fast"\n', 3,
     "edge.message_interval_ms", "must be an integer"),
    ('[edge]\nredirect_address = "a"\nmessage_interval_ms = 1\n', 3,
     "edge.message_interval_ms", "at least 10"),
    ('[edge]\nredirect_address = "a"\nmesage_interval_ms = 100\n', 3,
     "edge.mesage_interval_ms", "unknown key"),
    ('[edge]\nredirect_address = "a"\n\n[monitor]\ntype = "cpu"\n', 5, "monitor.type",
     "unknown monitor 'cpu'"),
    ('[edge]\nredirect_address = "a"\n[monitor]\ntype = "tcp-connections"\nports = [0]\n',
     5, "monitor.ports", "1 to 65535"),
    ('[edge]\nredirect_address = "a"\n[monitor]\ntype = "no.such.module:X"\n', 4,
     "monitor.type", "cannot import"),
    ('[edge]\nredirect_address = "a"\ncapacity = -5\n', 3, "edge.capacity", "greater than 0"),
    ('[edge]\n# no address\n', 1, "edge.redirect_address", "required"),
    ('[edge]\nredirect_address = "a"\n[extra]\n', 3, "extra", "unknown table"),
    ('[edge]\nredirect_address = "a\n', 2, None, "not valid TOML"),
])
def test_edge_config_errors_name_file_line_field(tmp_path, text, line, field, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_edge_config(path)
    assert err.value.path == str(path)
    assert err.value.line == line, str(err.value)
    assert err.value.field == field
    assert message in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_edge_config(tmp_path / "missing.toml")


def test_shipped_examples_load(monkeypatch):
    from pathlib import Path

    from lbmgmt.balancer.config import load_balancer_config

    examples = Path(__file__).parents[2] / "examples"
    monkeypatch.setenv("EDGE_HOST", "edge1.example.net")
    edge = load_edge_config(examples / "edge.toml")
    assert edge.redirect_address == "edge1.example.net:1935"
    assert [t.port for t in load_targets(edge.targets_file)] == [1934]
    balancer = load_balancer_config(examples / "balancer.toml")
    assert load_targets(edge.targets_file)[0].key == balancer.key


def test_shipped_nginx_rtmp_edge_example_loads(monkeypatch):
    from pathlib import Path

    from lbmgmt.edge.monitors import NginxRtmpMonitor

    monkeypatch.setenv("EDGE_HOST", "edge1.example.net")
    cfg = load_edge_config(Path(__file__).parents[2] / "examples" / "edge-nginx-rtmp.toml")
    assert isinstance(cfg.monitor, NginxRtmpMonitor)
    assert cfg.monitor.url == "http://127.0.0.1:8080/stat"
