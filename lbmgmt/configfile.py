"""Reading TOML config files with errors that name file, line and field.

tomllib gives values without positions, so a bad value would otherwise be
reported without telling the operator where it is. ``Section`` wraps one
table and locates keys in the source text when it has to complain; it also
rejects unknown keys, because a typo that silently falls back to a default is
the most common way a config goes wrong unnoticed.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from lbmgmt.endpoints import Endpoint

T = TypeVar("T")
_REQUIRED: Any = object()
_TOML_POS = re.compile(r"\(at line (\d+), column \d+\)")
_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\s*(#.*)?$")


class ConfigError(Exception):
    """A config or data file the daemon cannot start with."""

    def __init__(self, path: str | Path, message: str, *, line: int | None = None,
                 field: str | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"{field}: {message}" if field else message
        super().__init__(f"{where}: {what}")


def read_text(path: str | Path, what: str) -> str:
    """A UTF-8 file's text, or a ConfigError naming it and saying why not."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, f"cannot read {what}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, f"{what} is not UTF-8 text") from None


class ConfigFile:
    """A parsed TOML file that remembers its text for error positions."""

    def __init__(self, path: str | Path, text: str) -> None:
        self.path = Path(path)
        self.text = text
        try:
            self.data: dict[str, Any] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = _TOML_POS.search(str(exc))
            msg = _TOML_POS.sub("", str(exc)).strip()
            raise ConfigError(path, f"not valid TOML: {msg}",
                              line=int(m.group(1)) if m else None) from None

    @classmethod
    def load(cls, path: str | Path) -> ConfigFile:
        return cls(path, read_text(path, "config file"))

    def line_of(self, table: str, key: str | None) -> int | None:
        """Line of ``key`` inside ``[table]`` (or of the header if key is None)."""
        current = ""
        for number, raw in enumerate(self.text.splitlines(), start=1):
            header = _HEADER.match(raw)
            if header:
                current = header.group(1).replace('"', "").replace(" ", "")
                if key is None and current == table:
                    return number
                continue
            if key is not None and current == table and re.match(
                    rf"^\s*\"?{re.escape(key)}\"?\s*=", raw):
                return number
        return None

    def section(self, name: str, *, required: bool = False) -> Section:
        """The table ``name``; dotted names reach nested tables (``users.alice``)."""
        value: Any = self.data
        for part in name.split("."):
            value = value.get(part, _REQUIRED) if isinstance(value, dict) else None
        if value is _REQUIRED:
            value = _REQUIRED if required else {}
        if value is _REQUIRED:
            raise ConfigError(self.path, f"missing table [{name}]", field=name)
        if not isinstance(value, dict):
            raise ConfigError(self.path, "must be a table", line=self.line_of("", name),
                              field=name)
        return Section(self, name, value)

    def check_tables(self, known: Iterable[str]) -> None:
        known = set(known)
        for name in self.data:
            if name not in known:
                raise ConfigError(self.path, f"unknown table or key (expected one of "
                                  f"{', '.join(sorted(known))})",
                                  line=self.line_of(name, None) or self.line_of("", name),
                                  field=name)


class Section:
    """One table of a config file; typed getters that fail with a position."""

    def __init__(self, file: ConfigFile, name: str, data: dict[str, Any]) -> None:
        self.file = file
        self.name = name
        self.data = data
        self._seen: set[str] = set()

    def fail(self, key: str, message: str) -> NoReturn:
        # A missing key is reported at its table's header, the place to add it.
        line = self.file.line_of(self.name, key) or self.file.line_of(self.name, None)
        raise ConfigError(self.file.path, message, line=line, field=f"{self.name}.{key}")

    def _get(self, key: str, default: Any, types: tuple[type, ...], kind: str, *,
             secret: bool = False) -> Any:
        self._seen.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise ConfigError(self.file.path, "required key is missing",
                                  line=self.file.line_of(self.name, None),
                                  field=f"{self.name}.{key}")
            return default
        value = self.data[key]
        # bool is an int subclass in Python; TOML keeps them apart, so do we.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            shown = "" if secret else f" {value!r}"  # a secret is never echoed
            self.fail(key, f"must be {kind}, not {type(value).__name__}{shown}")
        return value

    def get_str(self, key: str, default: Any = _REQUIRED, *, nonempty: bool = True,
                secret: bool = False) -> Any:
        """A string; ``secret``: errors name the key and the type, never the value."""
        value = self._get(key, default, (str,), "a string", secret=secret)
        if nonempty and isinstance(value, str) and key in self.data and not value.strip():
            self.fail(key, "must not be empty")
        return value

    def get_bool(self, key: str, default: Any = _REQUIRED) -> Any:
        return self._get(key, default, (bool,), "true or false")

    def get_int(self, key: str, default: Any = _REQUIRED, *, min: int | None = None,
            max: int | None = None) -> Any:
        value = self._get(key, default, (int,), "an integer")
        if key in self.data:
            if min is not None and value < min:
                self.fail(key, f"must be at least {min}, not {value}")
            if max is not None and value > max:
                self.fail(key, f"must be at most {max}, not {value}")
        return value

    def get_number(self, key: str, default: Any = _REQUIRED, *, min: float | None = None,
               positive: bool = False) -> Any:
        value = self._get(key, default, (int, float), "a number")
        if key in self.data:
            if value != value or value in (float("inf"), float("-inf")):
                self.fail(key, "must be a finite number")
            if positive and value <= 0:
                self.fail(key, f"must be greater than 0, not {value}")
            if min is not None and value < min:
                self.fail(key, f"must be at least {min}, not {value}")
        return float(value) if isinstance(value, int) else value

    def get_int_list(self, key: str, default: Any = _REQUIRED, *, min: int = 0,
                 max: int = 2**31) -> Any:
        value = self._get(key, default, (list,), "a list of integers")
        if key in self.data:
            for item in value:
                if not isinstance(item, int) or isinstance(item, bool) or not min <= item <= max:
                    self.fail(key, f"items must be integers from {min} to {max}, not {item!r}")
        return value

    def get_str_list(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self._get(key, default, (list,), "a list of strings")
        if key in self.data and not all(isinstance(v, str) and v for v in value):
            self.fail(key, "items must be non-empty strings")
        return value

    def get_endpoints(self, key: str, default: Any = _REQUIRED, *,
                      default_port: int | None = None) -> Any:
        """``"host:port"`` or a non-empty list of them, as a tuple of ``Endpoint``."""
        raw = self._get(key, default, (str, list), '"host:port" or a list of them')
        if key not in self.data:
            return default
        texts = [raw] if isinstance(raw, str) else raw
        if not texts or not all(isinstance(t, str) for t in texts):
            self.fail(key, 'must be "host:port" or a non-empty list of such strings')
        out = []
        for text in texts:
            try:
                out.append(Endpoint.parse(text, default_port=default_port))
            except ValueError as exc:
                self.fail(key, str(exc))
        if len(set(out)) != len(out):
            self.fail(key, "names one address twice")
        return tuple(out)

    def get_table(self, key: str, default: Any = _REQUIRED) -> Any:
        return self._get(key, default, (dict,), "a table")

    def mark_read(self, key: str) -> None:
        """``key`` is read by other means (an array of tables): ``finish`` takes it."""
        self._seen.add(key)

    def finish(self, *, allow_extra: bool = False) -> dict[str, Any]:
        """Reject keys nobody read; returns them when ``allow_extra`` (plugin options)."""
        extra = {k: v for k, v in self.data.items() if k not in self._seen}
        if extra and not allow_extra:
            key = next(iter(extra))
            known = ", ".join(sorted(self._seen)) or "none"
            self.fail(key, f"unknown key (known keys: {known})")
        return extra
