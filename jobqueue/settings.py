"""The one way every process reads its configuration: environment variables, validated once.

The queue service, the gateway, the worker and its pipeline each describe their settings with
an `Env` reader, so that every number is finite and within its bounds, every address is
HOST:PORT, and a bad value stops the process at start-up with the same one line naming the
variable (`error: GATEWAY_GRPC_TIMEOUT_SECONDS must be a finite number, got 'nan'`), instead of
surfacing later as a confusing runtime error. Two copies of such a rule drift; there is one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

_HOST_PORT = re.compile(r"[^\s:/\[\]]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


class Env:
    """Typed, validated reads of named settings; an empty value counts as unset.

    `label` renders a setting's name in messages: the worker names a flag and its variable
    together (`--limit (WORKER_LIMIT)`), everything else the variable alone.
    """

    def __init__(
        self, values: Mapping[str, str], label: Callable[[str], str] | None = None
    ) -> None:
        self._values = values
        self._label = label or str

    def raw(self, name: str) -> str | None:
        value = self._values.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self._label(name)} {problem}")

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def secret(self, name: str) -> str | None:
        """A token or key: kept exactly as given (no stripping), None when unset."""
        value = self._values.get(name)
        return value if value else None

    def number(
        self, name: str, default: float, *, minimum: float, maximum: float | None = None
    ) -> float:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise self.error(name, f"must be a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise self.error(name, f"must be a finite number, got {raw!r}")
        self._check_bounds(name, raw, value, minimum, maximum)
        return value

    def whole(self, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise self.error(name, f"must be a whole number, got {raw!r}") from None
        self._check_bounds(name, raw, value, minimum, maximum)
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.raw(name)
        if raw is None:
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise self.error(name, f"must be true or false, got {raw!r}")

    def address(self, name: str, default: str) -> str:
        """HOST:PORT (or [IPv6]:PORT), as gRPC targets and listen addresses are written."""
        value = self.text(name, default)
        if not _HOST_PORT.fullmatch(value):
            raise self.error(name, f"must be HOST:PORT, got {value!r}")
        return value

    def choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        allowed = tuple(choices)
        value = self.text(name, default).lower()
        if value not in allowed:
            raise self.error(name, f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def directory(self, name: str) -> Path | None:
        """An absolute path, None when unset."""
        raw = self.raw(name)
        if raw is None:
            return None
        path = Path(raw).expanduser()
        if not path.is_absolute():
            raise self.error(name, f"must be an absolute path, got {raw!r}")
        return path

    def _check_bounds(
        self, name: str, raw: str, value: float, minimum: float, maximum: float | None
    ) -> None:
        if value < minimum:
            raise self.error(name, f"must be at least {_bound(minimum)}, got {raw!r}")
        if maximum is not None and value > maximum:
            raise self.error(name, f"must be at most {_bound(maximum)}, got {raw!r}")


def _bound(value: float) -> str:
    """1099511627776, not 1.09951e+12; 0.1, not 0.10000000000000001."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, for logs and output lines: the one in the
    authority (user:password@) and a `password=` query parameter."""
    masked = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", masked)


# A per-role token shorter than this is refused at start-up: `openssl rand -hex 32` makes 64.
MIN_TOKEN_CHARS = 16


def role_token(env: Env, name: str) -> str | None:
    """A per-role bearer token (QUEUE_WORKER_TOKEN, QUEUE_ADMIN_TOKEN): unset, or at least
    MIN_TOKEN_CHARS characters without spaces (it travels in an HTTP/2 header)."""
    token = env.secret(name)
    if token is None:
        return None
    if len(token) < MIN_TOKEN_CHARS or any(ch.isspace() for ch in token):
        raise env.error(
            name,
            f"must be at least {MIN_TOKEN_CHARS} characters without spaces (openssl rand -hex 32)",
        )
    return token
