"""Signing key pairs for the tests: PEM files as ``openssl`` writes them (PKCS#8 private, SubjectPublicKeyInfo
public)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_key_pair(root: Path, name: str = "signing", key: Any = None) -> tuple[Path, Path]:
    """``root/NAME.pem`` (private, unencrypted) and ``root/NAME.pub`` of ``key`` (default: a new P-256 key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()) if key is None else key
    private, public = Path(root) / f"{name}.pem", Path(root) / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public
