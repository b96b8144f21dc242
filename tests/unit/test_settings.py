"""Every bounded setting declared once: config loader, MBean setter, getMBeanInfo and docs agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lbmgmt.balancer import config as balancer_config
from lbmgmt.balancer import rtmp_config, rtsp_config
from lbmgmt.balancer.core import BalancerCore
from lbmgmt.balancer.mbeans import BalancerMBean
from lbmgmt.clocks import Clocks
from lbmgmt.configfile import ConfigError
from lbmgmt.edge import config as edge_config
from lbmgmt.edge.mbeans import SenderMBean
from lbmgmt.management import config as management_config
from lbmgmt.management.mbean import MBean
from lbmgmt.settings import Setting, markdown_table
from lbmgmt.status import SharedKey

DOCS = Path(__file__).parents[2] / "docs" / "management.md"
ALL = (balancer_config.SETTINGS + rtmp_config.SETTINGS + rtsp_config.SETTINGS
       + edge_config.SETTINGS
       + management_config.SETTINGS)


def test_the_docs_table_is_the_declarations():
    text = DOCS.read_text(encoding="utf-8")
    found = re.search(r"<!-- settings table: generated from the declarations -->\n(.*?)"
                      r"<!-- end of settings table -->", text, re.S)
    assert found, "docs/management.md lost its settings table markers"
    assert found.group(1) == markdown_table(ALL), (
        "docs/management.md's settings table is out of date; it should read:\n"
        + markdown_table(ALL))


@pytest.mark.parametrize("setting", ALL, ids=lambda s: s.key)
def test_the_config_loader_takes_the_bounds_and_refuses_past_them(setting: Setting,
                                                                  tmp_path: Path):
    def load(value: int):
        path = tmp_path / f"{setting.section}.toml"
        if setting.section == "edge":
            (tmp_path / "targets.txt").write_text("")
            path.write_text(f'[edge]\nredirect_address = "e:1"\n{setting.key} = {value}\n')
            return getattr(edge_config.load_edge_config(path), setting.key)
        if setting.section == "balancer":
            path.write_text(f'[balancer]\nkey = "k-0123456789abcdef"\n{setting.key} = {value}\n')
            return getattr(balancer_config.load_balancer_config(path), setting.key)
        path.write_text(f'[{setting.section}]\n\n{setting.key} = {value}\n'
                        '[balancer]\nkey = "k-0123456789abcdef"\n')
        loaded = balancer_config.load_balancer_config(path)
        if setting.section == "management":
            return getattr(loaded.management.limits, setting.key)
        return getattr(getattr(loaded, setting.section), setting.key)

    assert load(setting.minimum) == setting.minimum
    assert load(setting.maximum) == setting.maximum
    for bad, words in ((setting.minimum - 1, "at least"), (setting.maximum + 1, "at most")):
        with pytest.raises(ConfigError) as caught:
            load(bad)
        assert caught.value.line == 3 and f"{setting.section}.{setting.key}" in str(caught.value)
        assert words in str(caught.value)


def beans() -> dict[str, MBean]:
    core = BalancerCore(SharedKey("k"), timeout=5.0, grace=0.5, max_clock_skew=30.0)

    class Sender:  # what SenderMBean reads for its settings, no more
        def __init__(self) -> None:
            self.config = edge_config.EdgeConfig("e:1", Path("t"), Path("g"))

        def set_message_interval(self, ms: int) -> None:
            self.config.message_interval_ms = edge_config.MESSAGE_INTERVAL.check(ms)

        def set_load_sample(self, ms: int) -> None:
            self.config.load_sample_ms = edge_config.LOAD_SAMPLE.check(ms)

    return {"balancer": BalancerMBean(core, Clocks()),
            "edge": SenderMBean(Sender())}  # type: ignore[arg-type]


@pytest.mark.parametrize("setting", [s for s in ALL if s.attribute], ids=lambda s: s.key)
def test_the_mbean_setter_and_info_take_the_same_bounds(setting: Setting):
    bean = beans()[setting.section]
    assert setting.attribute is not None
    info = bean.mbean_info().attributes[setting.attribute]
    assert (info.type, info.unit, info.minimum, info.maximum, info.description) == (
        "integer", setting.unit, setting.minimum, setting.maximum, setting.doc)
    assert info.writable
    for good in (setting.minimum, setting.maximum):
        bean.write(setting.attribute, good)
        assert bean.read(setting.attribute) == good
    for bad in (setting.minimum - 1, setting.maximum + 1):
        with pytest.raises(ValueError, match=f"{setting.attribute} must be {setting.bounds}"):
            bean.write(setting.attribute, bad)
    assert bean.read(setting.attribute) == setting.maximum  # unchanged by the refusals


def test_a_setting_refuses_non_integers_and_a_default_outside_its_bounds():
    with pytest.raises(ValueError, match="integer"):
        balancer_config.GRACE.check(True)
    with pytest.raises(ValueError, match="integer"):
        balancer_config.GRACE.check(1.5)
    with pytest.raises(ValueError, match="outside"):
        Setting("x", "y_ms", None, 5, 10, 20, "ms", "doc")
