"""Bearer tokens: created once, stored only as SHA-256 hashes, checked in constant time, gated by scope.

A tokens file is strict JSON (written atomically, mode 0600)::

    {"format": "miniunlearn-tokens/1",
     "tokens": [{"name": "pipeline", "sha256": "<hex>", "scopes": ["delete", "read"], "created": "..."}]}

A token is 32 random bytes (``secrets.token_urlsafe``) behind the prefix ``mu_``: with 256 bits of
entropy an unsalted SHA-256 is as hard to invert as the token is to guess, so no slow hash is
needed. A presented token is hashed and compared with *every* stored hash by
:func:`hmac.compare_digest` (no early exit), so the time taken does not depend on which stored
token, or how much of one, it matches. Tokens are never logged, stored or echoed in errors.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from miniunlearn.core.errors import InputError, RunError
from miniunlearn.core.storage import read_json, to_json

SCOPES = ("delete", "predict", "read", "admin")
FORMAT = "miniunlearn-tokens/1"
TOKEN_PREFIX = "mu_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def parse_scopes(text: str) -> tuple[str, ...]:
    """``"delete,read"`` -> ``("delete", "read")``; unknown or no scopes are an InputError."""
    scopes = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise InputError(f"scopes must be a comma-separated subset of {', '.join(SCOPES)}; got {text!r}")
    return scopes


@dataclass(frozen=True)
class Identity:
    """Who made a request: the token's name and scopes (never the token itself)."""

    name: str
    scopes: tuple[str, ...]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


OPEN_ACCESS = Identity("anonymous (no tokens file; loopback only)", SCOPES)


class TokenStore:
    """The hashed tokens of one tokens file."""

    def __init__(self, entries: list[dict]):
        self.entries = entries

    @classmethod
    def load(cls, path: str | Path, missing_ok: bool = False) -> "TokenStore":
        path = Path(path)
        if not path.exists():
            if missing_ok:
                return cls([])
            raise InputError(f"tokens file not found: {path}")
        data = read_json(path, "tokens file")
        if data.get("format") != FORMAT or not isinstance(data.get("tokens"), list):
            raise InputError(f"{path} is not a miniunlearn tokens file (format {data.get('format')!r})")
        entries = data["tokens"]
        for entry in entries:
            if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64
                    and isinstance(entry.get("name"), str) and isinstance(entry.get("scopes"), list)
                    and all(s in SCOPES for s in entry["scopes"])):
                raise InputError(f"tokens file {path} holds a malformed entry; re-create it with `miniunlearn tokens add`")
        return cls(entries)

    def save(self, path: str | Path) -> None:
        """Write atomically with mode 0600: the hashes are not secrets, but nobody else should edit them."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(to_json({"format": FORMAT, "tokens": self.entries}) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def add(self, name: str, scopes: tuple[str, ...]) -> str:
        """Create a token for ``name``; return it (the only time it exists outside its holder's hands)."""
        if not _NAME.fullmatch(name or ""):
            raise InputError(f"token name {name!r}: 1-64 letters, digits or _.@- , starting with a letter or digit")
        if any(e["name"] == name for e in self.entries):
            raise InputError(f"a token named {name!r} exists already; remove it first or choose another name")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.entries.append({"name": name, "sha256": token_sha256(token), "scopes": list(scopes),
                             "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
        return token

    def remove(self, name: str) -> None:
        kept = [e for e in self.entries if e["name"] != name]
        if len(kept) == len(self.entries):
            raise InputError(f"no token named {name!r}")
        self.entries = kept

    def identify(self, token: str) -> Identity | None:
        """The identity whose hash matches ``token``, compared against every entry in constant time."""
        digest = token_sha256(token).encode()
        found = None
        for entry in self.entries:
            if hmac.compare_digest(digest, entry["sha256"].encode()):
                found = entry
        return None if found is None else Identity(found["name"], tuple(found["scopes"]))

    def listing(self) -> list[dict]:
        return [{"name": e["name"], "scopes": e["scopes"], "created": e.get("created")} for e in self.entries]


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer T`` header, or None when absent or of another scheme."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def load_store(path: str | Path | None) -> TokenStore | None:
    """The store for ``serve --tokens``; a file with no token would lock everyone out, so it is refused."""
    if path is None:
        return None
    store = TokenStore.load(path)
    if not store.entries:
        raise RunError(f"tokens file {path} holds no token; add one with `miniunlearn tokens add {path} --name NAME "
                       "--scopes ...`")
    return store
