"""Signing a model repository with an elliptic-curve key (OpenSSF ``model-signing``), offline.

``tritongen sign REPO --private-key KEY`` hashes every file under ``REPO`` (every model folder, every version,
every file; links are refused) and writes a signature over those hashes to ``REPO/.tritongen-signature.sig`` (or
``--signature PATH``). The default signature is a file at the top of the repository, where Triton loads only
folders; the check skips that one file. A signature inside a model folder is refused. Also outside the signature:
Python's ``__pycache__/`` folders beside a ``.py`` (the server writes them on load, after signing); verify accepts
their files only as the exact bytecode of the signed source (:mod:`tritongen.bytecode`).

``check_signature`` recomputes the hashes and checks them and the signature against a public key: a changed,
added or removed file, another key, or no signature at all is an error. Key files are read and checked here
before the library reads them; their contents are never printed.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import stat
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import TritongenError
from .files import FileTooLargeError, leads_through_loop, read_problem, regular_bytes, walk
from .layout import SIGNATURE_NAME
from .validate import check_repository_folder

MAX_KEY_BYTES = 64 << 10
MAX_SIGNATURE_BYTES = 64 << 20
_CURVES = ("secp256r1", "secp384r1", "secp521r1")
_KEYGEN = (
    "make a key pair with: openssl ecparam -name prime256v1 -genkey -noout -out signing-key.pem && "
    "openssl ec -in signing-key.pem -pubout -out signing-key.pub"
)


def _library():
    try:
        from model_signing import hashing, signing, verifying  # noqa: PLC0415
    except ImportError as exc:
        raise TritongenError(
            f"the model-signing library cannot be imported ({exc})",
            "install it beside tritongen: pip install model-signing pyopenssl",
        ) from None
    return hashing, signing, verifying


def _read_key(path: Path, role: str) -> bytes:
    """The key file's bytes, read once and bounded (a FIFO or device is refused, not waited on)."""
    try:
        return regular_bytes(path, MAX_KEY_BYTES)
    except FileNotFoundError:
        raise TritongenError(
            f"{role} key file {path} does not exist", f"pass the PEM file of the {role} key ({_KEYGEN})"
        ) from None
    except FileTooLargeError:
        raise TritongenError(
            f"{role} key file {path} is larger than {MAX_KEY_BYTES >> 10} KiB, too large for a key",
            f"pass the PEM file of the {role} key",
        ) from None
    except IsADirectoryError:
        raise TritongenError(f"{role} key path {path} is not a file", f"pass the PEM file of the {role} key") from None
    except OSError as exc:
        problem = f"{role} key file {path} {read_problem(exc)}"
        raise TritongenError(problem, f"pass the PEM file of the {role} key") from None


def _key_kind(key) -> str:
    """What ``key`` is, in words and with its article: 'an RSA private key', 'a public key on the curve
    secp256k1'."""
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519  # noqa: PLC0415

    families = (
        (rsa.RSAPrivateKey, rsa.RSAPublicKey, "an RSA"),
        (dsa.DSAPrivateKey, dsa.DSAPublicKey, "a DSA"),
        (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey, "an Ed25519"),
        (ed448.Ed448PrivateKey, ed448.Ed448PublicKey, "an Ed448"),
        (x25519.X25519PrivateKey, x25519.X25519PublicKey, "an X25519"),
        (x448.X448PrivateKey, x448.X448PublicKey, "an X448"),
    )
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        part = "private" if isinstance(key, ec.EllipticCurvePrivateKey) else "public"
        return f"a {part} key on the curve {key.curve.name}"
    for private, public, name in families:
        if isinstance(key, (private, public)):
            return f"{name} {'private' if isinstance(key, private) else 'public'} key"
    return f"a key of type {type(key).__name__}"


def _check_curve(key, path: Path, role: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name not in _CURVES:
        raise TritongenError(
            f"{role} key file {path} holds {_key_kind(key)}, not an elliptic-curve P-256, P-384 or P-521 key", _KEYGEN
        )


def check_private_key(path: Path) -> bytes:
    """Raise :class:`TritongenError` unless ``path`` is an unencrypted PEM EC private key of a supported curve;
    returns the bytes checked."""
    from cryptography.exceptions import UnsupportedAlgorithm  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    data = _read_key(Path(path), "private")
    if b"PRIVATE KEY-----" not in data and b"PUBLIC KEY-----" in data:
        raise TritongenError(
            f"private key file {path} holds a public key", "sign with the private key (signing-key.pem)"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TritongenError(
            f"private key file {path} is encrypted with a password",
            "write an unencrypted copy for signing (openssl ec -in KEY -out PLAIN.pem) and keep it private",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise TritongenError(f"private key file {path} is not a PEM private key", _KEYGEN) from None
    _check_curve(key, Path(path), "private")
    return data


def check_public_key(path: Path) -> bytes:
    """Raise :class:`TritongenError` unless ``path`` is a PEM EC public key of a supported curve; returns the
    bytes checked."""
    from cryptography.exceptions import UnsupportedAlgorithm  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    data = _read_key(Path(path), "public")
    if b"PRIVATE KEY-----" in data:
        raise TritongenError(
            f"public key file {path} holds a private key",
            "pass the public key (openssl ec -in signing-key.pem -pubout -out signing-key.pub); "
            "keep the private key off deploy hosts",
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise TritongenError(f"public key file {path} is not a PEM public key", _KEYGEN) from None
    _check_curve(key, Path(path), "public")
    return data


def same_public_key(a: Path, b: Path) -> bool:
    """Whether the PEM public-key files ``a`` and ``b`` hold the same key (compared as DER SubjectPublicKeyInfo,
    so two encodings of one key are one key); each is checked as :func:`check_public_key` checks it."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    def der(path: Path) -> bytes:
        key = serialization.load_pem_public_key(check_public_key(path))
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    return der(a) == der(b)


def unchecked_signature(repo: Path, signature: Path | None = None) -> Path | None:
    """The signature file of ``repo`` (the default one, or ``signature``) if there is one: what a verify without
    a public key leaves unchecked (:attr:`tritongen.verify.VerifyReport.unchecked_signature`)."""
    path = Path(signature) if signature is not None else Path(repo) / SIGNATURE_NAME
    return path if path.is_file() else None


def signature_location(repo: Path, signature: Path | None) -> tuple[Path, str | None]:
    """(signature path, its name if it lies at the top of ``repo`` and the hashing must skip it, else None)."""
    path = Path(signature) if signature is not None else Path(repo) / SIGNATURE_NAME
    if leads_through_loop(path.parent) or leads_through_loop(repo):
        raise TritongenError(
            f"signature path {path} leads through a loop of symbolic links", "pass a signature path in a real folder"
        )
    root = Path(repo).resolve()
    full = path.parent.resolve() / path.name
    if full == root or root not in full.parents:
        return full, None
    if full.parent != root:
        raise TritongenError(
            f"signature path {path} lies inside a model folder of {repo}, where Triton would load it",
            f"keep it at the top of the repository (the default, {SIGNATURE_NAME}) or outside it",
        )
    return full, full.name


def _hashing_config(hashing, skipped: str | None, caches: Sequence[str] = (), records: Sequence[str] = ()):
    """The same file-by-file SHA-256 hashing on both sides. Ignored: the signature itself, every model's rollout
    record (``records``: ``tritongen rollout`` rewrites it on a signed repository; verify checks its form) and,
    when signing, Python's bytecode caches (``caches``; the signature records them, and verify adds them from it)."""
    config = hashing.Config().use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)
    paths = ([skipped] if skipped else []) + list(caches) + list(records)
    return config.set_ignored_paths(paths=paths, ignore_git_paths=False)


def rollout_record_paths(repo: Path) -> list[str]:
    """``MODEL/tritongen-rollout.json`` and ``MODEL/tritongen-rollout.lock`` for every model folder (whether they
    exist yet or not)."""
    from .layout import ROLLOUT_LOCK_NAME, ROLLOUT_RECORD_NAME

    folders = sorted(p for p in Path(repo).iterdir() if p.is_dir() and not p.is_symlink())
    return [f"{folder.name}/{name}" for folder in folders for name in (ROLLOUT_RECORD_NAME, ROLLOUT_LOCK_NAME)]


def bytecode_cache_dirs(repo: Path) -> list[str]:
    """``MODEL/.../__pycache__`` for every folder of a model that holds a ``.py`` file: the Python backend writes
    its bytecode there on load, after signing. What is in them is checked by verify against the signed source
    (:mod:`tritongen.bytecode`), not by the signature."""
    from .bytecode import PYCACHE

    out = []
    for model_dir in sorted(p for p in Path(repo).iterdir() if p.is_dir() and not p.is_symlink()):
        for dirpath, dirnames, filenames in walk(model_dir, depth=1):
            dirnames[:] = sorted(d for d in dirnames if d != PYCACHE)
            if any(f.endswith(".py") for f in filenames):
                out.append((Path(dirpath) / PYCACHE).relative_to(repo).as_posix())
    return out


def sign_repository(
    repo: Path, private_key: Path, signature: Path | None = None, *, allow_unverified: Iterable[str] = ()
) -> Path:
    """Sign every file under ``repo`` once it verifies (:func:`tritongen.verify.check_verified`); returns the
    signature path (written atomically)."""
    from .verify import check_verified

    repo = Path(repo)
    check_repository_folder(repo)
    key = check_private_key(private_key)
    check_verified(repo, allow_unverified=allow_unverified)  # sign only what matches its manifests
    path, skipped = signature_location(repo, signature)
    if path.is_dir():
        raise TritongenError(f"signature path {path} is a folder", "pass a file path with --signature")
    if not path.parent.is_dir():
        raise TritongenError(
            f"the folder of signature path {path} does not exist", "create it, or pass another --signature"
        )
    hashing, signing, _ = _library()
    with tempfile.TemporaryDirectory(prefix="tritongen-sign-") as work:
        made = Path(work) / "signature.sig"  # written outside the repository, so the hashing never sees it
        key_copy = Path(work) / "private-key.pem"  # the bytes checked are the bytes the library signs with
        with os.fdopen(os.open(key_copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
            fh.write(key)
        try:
            hashed = _hashing_config(hashing, skipped, bytecode_cache_dirs(repo), rollout_record_paths(repo))
            config = signing.Config().set_hashing_config(hashed)
            config.use_elliptic_key_signer(private_key=key_copy).sign(repo, made)
        except (ValueError, OSError) as exc:  # a link in the repository, an unreadable file
            raise TritongenError(
                f"cannot sign model repository {repo}: {_short(exc)}", "fix the path named, then sign again"
            ) from None
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(made.read_bytes())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return path


def _short(exc: BaseException | str, limit: int = 300) -> str:
    """The library's message on one line, control characters escaped (file names in it are the repository's)."""
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in " ".join(str(exc).split())) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


def check_signature(repo: Path, public_key: Path, signature: Path | None = None) -> Path:
    """Check that ``repo`` is exactly what the holder of ``public_key``'s private key signed; returns the
    signature's path."""
    repo = Path(repo)
    check_repository_folder(repo)
    key = check_public_key(public_key)
    path, skipped = signature_location(repo, signature)
    data = _signature_bytes(repo, path)
    for _ in walk(repo):  # a tree too deep to walk is one line (the library's own walk recursed out of the stack)
        pass
    hashing, _, verifying = _library()
    with tempfile.TemporaryDirectory(prefix="tritongen-signature-") as tmp:
        copy, key_copy = _checked_copies(Path(tmp), data, key)
        config = verifying.Config().set_hashing_config(
            _hashing_config(hashing, skipped, records=rollout_record_paths(repo))
        )
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the library prints warnings about old formats
                config.use_elliptic_key_verifier(public_key=key_copy).verify(repo, copy)
            ignored = _signed_manifest(copy, key_copy).serialization_type.get("ignore_paths", [])
        except Exception as exc:  # noqa: BLE001 - whatever the library raises, the repository is not proven signed
            raise TritongenError(*_failure(repo, path, public_key, exc)) from None
    problems = ignored_path_problems(repo, ignored)
    if problems:
        raise TritongenError(
            f"model repository {repo} holds what its signature does not cover: {'; '.join(problems)}",
            "remove it (Triton would load it unchecked), or re-sign the repository after a build",
        )
    return path


def ignored_path_problems(repo: Path, ignored: Iterable[str]) -> list[str]:
    """Where a path the signature leaves out (the library skips everything under one at verify as at signing)
    holds what Triton may load unchecked. tritongen sign leaves out three forms: the signature's own name at the
    top of the repository (a file, which Triton never loads: a folder of that name would be a whole model outside
    the signature), ``MODEL/tritongen-rollout.json`` and ``.lock`` (their form is verify's), and
    ``.../__pycache__`` (verify holds their files to the signed source). Anything else was not made by it."""
    from .bytecode import PYCACHE
    from .layout import ROLLOUT_LOCK_NAME, ROLLOUT_RECORD_NAME

    problems = []
    for rel in ignored:
        parts = rel.split("/") if isinstance(rel, str) else []
        if any(part in ("", ".", "..") for part in parts):
            problems.append(f"it leaves out {_short(repr(rel), 200)}, which tritongen sign never does")
            continue
        if len(parts) == 2 and parts[1] in (ROLLOUT_RECORD_NAME, ROLLOUT_LOCK_NAME):
            continue
        if len(parts) >= 2 and parts[-1] == PYCACHE and PYCACHE not in parts[:-1]:  # in a model folder, never atop
            continue
        if len(parts) != 1 or parts[0] == PYCACHE:
            problems.append(f"it leaves out {_short(repr(rel), 200)}, which tritongen sign never does")
            continue
        try:
            mode = os.lstat(Path(repo) / parts[0]).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"{_short(parts[0], 200)} (left out as a signature's name) {read_problem(exc)}")
            continue
        if not stat.S_ISREG(mode):
            problems.append(
                f"{_short(parts[0], 200)} is left out as a signature's name, and is not a file but "
                f"{'a folder' if stat.S_ISDIR(mode) else 'a link or special file'}"
            )
    return problems


def _signed_manifest(signature: Path, public_key: Path):
    """The manifest ``signature`` signs, once it is proven to be ``public_key``'s (the library's own reading)."""
    from model_signing._signing import sign_ec_key, sign_sigstore_pb  # noqa: PLC0415 - no public API returns these

    with contextlib.redirect_stdout(io.StringIO()):  # the library prints warnings about old formats
        return sign_ec_key.Verifier(public_key).verify(sign_sigstore_pb.Signature.read(signature))


def signed_digests(repo: Path, public_key: Path, signature: Path | None = None) -> dict[str, str]:
    """What the holder of ``public_key``'s private key signed for ``repo``: the sha256 of every file the
    signature lists (path in the repository, ``model/1/model.py``, -> hex digest), once the signature itself is
    proven to be that key's. Nothing under ``repo`` is read: the caller hashes the bytes it is about to use and
    holds them to these (``tritongen rollout`` into a server that checks signatures), so the check and the use
    read the same bytes."""
    key = check_public_key(public_key)
    path, _ = signature_location(repo, signature)
    data = _signature_bytes(repo, path)
    _library()  # a missing library is one error

    with tempfile.TemporaryDirectory(prefix="tritongen-signature-") as tmp:
        copy, key_copy = _checked_copies(Path(tmp), data, key)
        try:
            manifest = _signed_manifest(copy, key_copy)
            listed = [(d.identifier, d.digest.algorithm, d.digest.digest_hex) for d in manifest.resource_descriptors()]
        except Exception as exc:  # noqa: BLE001 - whatever the library raises, the signature is not proven
            raise TritongenError(*_failure(Path(repo), path, public_key, exc)) from None
    other = sorted({algorithm for _, algorithm, _ in listed if algorithm != "sha256"})
    if other:
        raise TritongenError(
            f"signature {path} hashes files with {', '.join(other)}, not file by file with sha256 as tritongen sign "
            "does",
            f"sign the repository with tritongen sign {repo} --private-key KEY",
        )
    return {identifier: digest for identifier, _, digest in listed}


def _checked_copies(folder: Path, signature: bytes, public_key: bytes) -> tuple[Path, Path]:
    """The signature and key bytes checked, written where the library reads them: it reads exactly those."""
    copies = folder / "signature.sig", folder / "public-key.pem"
    copies[0].write_bytes(signature)
    copies[1].write_bytes(public_key)
    return copies


def _signature_bytes(repo: Path, path: Path) -> bytes:
    """The signature file's bytes, read once and bounded (a FIFO or device is refused, not waited on)."""
    try:
        return regular_bytes(path, MAX_SIGNATURE_BYTES)
    except FileNotFoundError:
        raise TritongenError(
            f"model repository {repo} is not signed: no signature file {path}",
            f"sign it with tritongen sign {repo} --private-key KEY (or pass --signature PATH)",
        ) from None
    except FileTooLargeError:
        raise TritongenError(
            f"signature file {path} is larger than {MAX_SIGNATURE_BYTES >> 20} MiB", "sign the repository again"
        ) from None
    except OSError as exc:
        raise TritongenError(
            f"signature file {path} {read_problem(exc)}", "pass the signature file tritongen sign wrote"
        ) from None


_MISMATCH = "Signature mismatch: "
_MAX_NAMED = 10  # files named per kind of difference; the rest are counted


def _mismatches(message: str) -> list[str] | None:
    """The library's list of differences (``Signature mismatch: [...]``, a Python list of strings) read back as
    that list, or None. Read as a literal, not by pattern: a digest's bytes repr may hold either quote, which turns
    the list's own quoting into escapes."""
    if not message.startswith(_MISMATCH):
        return None
    try:
        items = ast.literal_eval(message[len(_MISMATCH) :])
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return items if isinstance(items, list) and all(isinstance(i, str) for i in items) else None


def _named(paths: Sequence[str]) -> str:
    shown = [_short(p, 200) for p in paths[:_MAX_NAMED]]
    more = len(paths) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _differences(items: Sequence[str]) -> str:
    """Each kind of difference in the library's list, its paths named: changed, added, removed (never the digests,
    and never the library's 'model', which here is the whole repository)."""
    changed: list[str] = []
    added: list[str] = []
    removed: list[str] = []
    other: list[str] = []
    for item in items:
        if item.startswith("Hash mismatch for '") and "': Expected '" in item:
            changed.append(item[len("Hash mismatch for '") : item.index("': Expected '")])
        elif item.startswith(("Extra files found in model '", "Missing files in model '")) and "': " in item:
            names = item.split("': ", 1)[1].split(", ")
            (added if item.startswith("Extra") else removed).extend(n for n in names if n)
        else:
            other.append(_short(item))
    parts = [
        f"{kind} since signing: {_named(paths)}"
        for kind, paths in (("changed", changed), ("added", added), ("removed", removed))
        if paths
    ]
    return "; ".join(parts + other)


def _failure(repo: Path, path: Path, public_key: Path, exc: Exception) -> tuple[str, str]:
    text = _short(exc)
    items = _mismatches(str(exc))
    if items is not None or text.startswith(_MISMATCH):
        found = _differences(items) if items else "the library's list of differences cannot be read"
        return (
            f"model repository {repo} differs from what was signed ({found})",
            "restore the signed files, or re-sign the repository (tritongen sign) after a build, tune or engine",
        )
    if text.startswith("Key mismatch") or type(exc).__name__ == "InvalidSignature":
        return (
            f"signature {path} was not made with the private key of {public_key}",
            "pass the public key that belongs to the signing key, or re-sign the repository with its private key",
        )
    if text.startswith("Cannot use '"):  # a link or special file in the repository, which no signature covers
        return (
            f"model repository {repo} holds what no signature covers ({text})",
            "remove it: links and special files are neither signed nor loaded as signed",
        )
    return (
        f"signature {path} cannot be checked ({type(exc).__name__}: {text})",
        f"sign the repository again (tritongen sign {repo} --private-key KEY)",
    )
