"""Receipts of completed deletions, signed with the run's Ed25519 key.

A receipt is a JSON object: the signed fields (run id, request id, the SHA-256 of each key --
never the keys --, received and done times, method, tol, certificate, release parameters, model
SHA-256 before and after, the ledger row's checksum) plus

    "signature": {"algorithm": "Ed25519", "public_key_sha256": ..., "value": base64(sig)}

where ``sig = Ed25519_sign(key, canonical_json(fields))`` and ``canonical_json`` is compact JSON
with sorted keys (:func:`miniunlearn.core.storage.canonical_json`). Verifying recomputes the
canonical text of everything but ``signature`` and checks the signature with the public key:
changing any field, adding one or removing one invalidates it.

The run's key pair lives in ``RUN/serve/``: ``receipt-key.pem`` (PKCS#8, created with mode 0600
and ``O_EXCL``, so two servers racing to create it cannot both win, and never world-readable even
for an instant) and ``receipt-key.pub.pem`` (SubjectPublicKeyInfo), which an auditor may be given.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from miniunlearn.core.errors import InputError, RunError
from miniunlearn.core.storage import atomic_write_bytes, canonical_json

SERVE_DIR = "serve"
KEY_FILE = "receipt-key.pem"
PUBLIC_KEY_FILE = "receipt-key.pub.pem"
FORMAT = "miniunlearn-receipt/1"


def key_paths(run_dir: str | Path) -> tuple[Path, Path]:
    base = Path(run_dir) / SERVE_DIR
    return base / KEY_FILE, base / PUBLIC_KEY_FILE


def signing_key(run_dir: str | Path) -> Ed25519PrivateKey:
    """The run's signing key, created on first use (mode 0600); the public key is written beside it."""
    private_path, public_path = key_paths(run_dir)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    if not private_path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        tmp = private_path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, private_path)  # fails if another process created the key meanwhile: keep theirs
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    key = _load_private(private_path)
    public = public_pem(key.public_key())
    if not public_path.exists() or public_path.read_bytes() != public:
        atomic_write_bytes(public_path, public)
    return key


def _load_private(path: Path) -> Ed25519PrivateKey:
    if path.stat().st_mode & 0o077:
        raise RunError(f"receipt signing key {path} is readable by others (mode {path.stat().st_mode & 0o777:o}); "
                       f"run `chmod 600 {path}`")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise RunError(f"receipt signing key {path} cannot be read ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise RunError(f"receipt signing key {path} is not an Ed25519 key")
    return key


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_sha256(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"public key file not found: {path}")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path} is not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{path} is not an Ed25519 public key")
    return key


def run_public_key(run_dir: str | Path) -> Ed25519PublicKey:
    _, public_path = key_paths(run_dir)
    if not public_path.is_file():
        raise InputError(f"run {run_dir} has no receipt key ({public_path}): no server has signed a receipt for it")
    return load_public_key(public_path)


def sign(fields: dict, key: Ed25519PrivateKey) -> dict:
    """``fields`` plus their Ed25519 signature over :func:`canonical_json` (see the module docstring)."""
    if "signature" in fields:
        raise ValueError("the signed fields may not contain 'signature'")
    body = {"format": FORMAT, **fields}
    value = key.sign(canonical_json(body).encode("utf-8"))
    return {**body, "signature": {"algorithm": "Ed25519", "public_key_sha256": public_key_sha256(key.public_key()),
                                  "value": base64.b64encode(value).decode("ascii")}}


def verify(receipt: dict, key: Ed25519PublicKey) -> str | None:
    """None when ``receipt`` carries a valid signature by ``key``, else the reason it does not."""
    if not isinstance(receipt, dict) or not isinstance(receipt.get("signature"), dict):
        return "no signature object"
    signature = receipt["signature"]
    if signature.get("algorithm") != "Ed25519":
        return f"unsupported signature algorithm {signature.get('algorithm')!r}"
    if signature.get("public_key_sha256") != public_key_sha256(key):
        return "signed by another key (public key SHA-256 differs)"
    try:
        value = base64.b64decode(str(signature.get("value", "")), validate=True)
    except ValueError:
        return "the signature is not base64"
    body = {k: v for k, v in receipt.items() if k != "signature"}
    try:
        key.verify(value, canonical_json(body).encode("utf-8"))
    except InvalidSignature:
        return "the signature does not match the receipt's fields (altered, or signed by another key)"
    except ValueError as exc:
        return f"the receipt's fields cannot be made canonical ({exc})"
    return None
