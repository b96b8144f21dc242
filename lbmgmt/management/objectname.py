"""JMX object names: ``domain:key=value,...``, with JMX's pattern rules.

Patterns: ``*`` and ``?`` in the domain and in property values; a trailing
``,*`` (or a lone ``*``) for "any further properties". ``*:*`` matches every
name. Unlike JMX, quoted values are not supported: values may not contain
``, = : " * ?``, which no lbmgmt name needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BAD_KEY = re.compile(r"[,=:*?\"\n]")
_BAD_VALUE = re.compile(r"[,=:\"\n]")


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), re.S)


@dataclass(frozen=True, slots=True)
class ObjectName:
    domain: str
    properties: tuple[tuple[str, str], ...]  # in the order written
    property_pattern: bool = False

    @classmethod
    def parse(cls, text: str) -> ObjectName:
        """Raises ValueError naming what is wrong."""
        if not isinstance(text, str):
            raise ValueError("an object name must be a string")
        domain, sep, props = text.partition(":")
        if not sep:
            raise ValueError(f"{text!r} has no ':' between domain and key properties")
        if "\n" in domain or "=" in domain or "," in domain:
            raise ValueError(f"bad domain {domain!r}")
        if not props:
            raise ValueError(f"{text!r} has no key properties")
        pairs: list[tuple[str, str]] = []
        pattern = False
        parts = props.split(",")
        for i, part in enumerate(parts):
            if part == "*":
                if i != len(parts) - 1:
                    raise ValueError("'*' may only end the key property list")
                pattern = True
                continue
            key, eq, value = part.partition("=")
            if not eq or not key or not value:
                raise ValueError(f"bad key property {part!r} in {text!r}")
            if _BAD_KEY.search(key) or _BAD_VALUE.search(value):
                raise ValueError(f"unsupported character in {part!r}")
            if any(key == k for k, _ in pairs):
                raise ValueError(f"key {key!r} given twice in {text!r}")
            pairs.append((key, value))
        if not pairs and not pattern:
            raise ValueError(f"{text!r} has no key properties")
        return cls(domain, tuple(pairs), pattern)

    @classmethod
    def of(cls, domain: str, **properties: str) -> ObjectName:
        return cls.parse(f"{domain}:" + ",".join(f"{k}={v}" for k, v in properties.items()))

    @property
    def is_pattern(self) -> bool:
        return (self.property_pattern or "*" in self.domain or "?" in self.domain
                or any("*" in v or "?" in v for _, v in self.properties))

    @property
    def canonical(self) -> str:
        """Keys sorted, as JMX's getCanonicalName: what equality is based on."""
        props = ",".join(f"{k}={v}" for k, v in sorted(self.properties))
        if self.property_pattern:
            props = f"{props},*" if props else "*"
        return f"{self.domain}:{props}"

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.properties if k == key), None)

    def matches(self, name: ObjectName) -> bool:
        """Does the (pattern) name ``self`` match the concrete ``name``?"""
        if not _wildcard(self.domain).fullmatch(name.domain):
            return False
        theirs = dict(name.properties)
        for key, value in self.properties:
            if key not in theirs or not _wildcard(value).fullmatch(theirs[key]):
                return False
        return self.property_pattern or len(theirs) == len(self.properties)

    def __str__(self) -> str:
        props = ",".join(f"{k}={v}" for k, v in self.properties)
        if self.property_pattern:
            props = f"{props},*" if props else "*"
        return f"{self.domain}:{props}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectName) and other.canonical == self.canonical

    def __hash__(self) -> int:
        return hash(self.canonical)
