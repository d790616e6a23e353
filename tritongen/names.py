"""One rule for the strings users and model files put into generated files and command lines.

Model names, tensor names and class labels end up in ``config.pbtxt``, ``labels.txt``, generated ``model.py``
parameters and file names; a host name ends up on tritonserver's and docker's command line. Every such
string is checked here, where it enters:

- no control or format characters (Unicode categories Cc, Cf, Cs, Zl, Zp: ``\\r``, ``\\n``, NUL, ``\\x85``,
  ``\\u2028``, ``\\u2029``, ...): Python's text-mode reading splits lines on several of them, so a label
  holding one would shift every later label;
- a length bound (:data:`MAX_NAME_CHARS`, :data:`MAX_LABEL_CHARS`) and a bound on the number of labels
  (:data:`MAX_LABELS`), checked before anything of that size is built;
- a host is an IP address or a host name that resolves here (within :data:`RESOLVE_TIMEOUT_S`).

Messages show the offending text escaped (``ascii``), so an error stays one line.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import unicodedata
from collections.abc import Iterable
from typing import Any

from .errors import TritongenError

# Characters a shell word splits on or acts on: Triton's Python backend starts each model's stub through
# ``bash -c`` with the model's path unquoted (measured, Triton 2.51: a model folder named ``x$(id>f)`` ran ``id``
# in the server; a repository or model folder named with a space killed the stub in ``stol``, the model hung in
# loading). Model names, model file names and the repository path Triton gets must hold none.
SHELL_SPECIAL = frozenset(" \t\n\r\v\f$`\\\"';&|<>()*?[]{}#~!")


def shell_special_chars(text: str) -> list[str]:
    """The characters of ``text`` a shell would split on or act on (control characters too), sorted."""
    return sorted({c for c in text if c in SHELL_SPECIAL or not c.isprintable()})


MAX_NAME_CHARS = 128  # model and tensor names; "<name>_postprocess" stays far below a file name's 255 bytes
MAX_LABEL_CHARS = 1024
MAX_LABELS = 1_000_000  # class labels of one classifier (id2label keys must lie below this)
MAX_HOST_CHARS = 253
RESOLVE_TIMEOUT_S = 3.0
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME_RE = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
_SCOPE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # an IPv6 zone: fe80::1%eth0


def shown(text: Any, limit: int = 60) -> str:
    """``text`` for an error message: escaped (one line, printable ASCII) and cut at ``limit`` characters."""
    text = str(text)
    cut = text if len(text) <= limit else text[:limit] + "..."
    return ascii(cut)[1:-1]


def did_you_mean(name: Any, known: Iterable[Any]) -> str:
    """``"did you mean 'minilm'?"`` when ``name`` is close to one of ``known`` (a typo), else ``""``: for a
    name looked up among known ones (model names of a repository, keys of a spec file)."""
    import difflib

    text, names = str(name), [str(k) for k in known]
    folded = {n.casefold(): n for n in names}
    key = text.casefold()
    if key in folded:  # another case: MLP for mlp
        return f"did you mean '{shown(folded[key])}'?"
    swapped = [n for n in names if _one_adjacent_swap(n.casefold(), key)]  # mpl for mlp
    if len(swapped) == 1:
        return f"did you mean '{shown(swapped[0])}'?"
    close = difflib.get_close_matches(key, list(folded), n=1, cutoff=0.75)
    return f"did you mean '{shown(folded[close[0]])}'?" if close else ""


def listed(names: list[str], shown_at_most: int = 5) -> str:
    """``a, b, c, d, e, ... (8 in all)``: the first names of a list for a message."""
    more = f", ... ({len(names)} in all)" if len(names) > shown_at_most else ""
    return ", ".join(shown(n) for n in names[:shown_at_most]) + more


def _one_adjacent_swap(a: str, b: str) -> bool:
    """Whether ``a`` is ``b`` with two neighbouring characters swapped (``mpl`` and ``mlp``; not any anagram)."""
    if len(a) != len(b):
        return False
    differ = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return (
        len(differ) == 2
        and differ[1] == differ[0] + 1
        and a[differ[0]] == b[differ[1]]
        and a[differ[1]] == b[differ[0]]
    )


def with_suggestion(name: Any, known: Iterable[Any], fix: str) -> str:
    """``fix`` led by :func:`did_you_mean`'s question when ``name`` is close to one of ``known``."""
    hint = did_you_mean(name, known)
    return f"{hint} {fix}" if hint else fix


def one_line(text: str) -> str:
    """``text`` with every refused character escaped (``\\r``, ``\\u2028``): an error message stays one line
    whatever file name or value it quotes."""
    return "".join(ascii(c)[1:-1] if unicodedata.category(c) in REFUSED_CATEGORIES else c for c in text)


def refused_character(text: str) -> str | None:
    """The first character of ``text`` that no generated file may hold, or None."""
    for char in text:
        if unicodedata.category(char) in REFUSED_CATEGORIES:
            return char
    return None


def check_path_text(path: Any, option: str) -> None:
    """Refuse a path that a report or bundle will quote but cannot hold: a control or format character, or a byte
    that is not UTF-8 (Python holds it as a lone surrogate, which no UTF-8 file can store)."""
    char = display_problem_character(str(path))  # a zero-width joiner (Persian names) is fine in UTF-8
    if char is not None:
        raise TritongenError(
            f"{option} {shown(path, 80)} holds the character U+{ord(char):04X}, which the files written from it "
            "cannot hold as it is",
            "rename it to a name of printable UTF-8 characters",
        )


# Characters that reorder or break what follows them on screen: the bidirectional embeddings, overrides and isolates
# (U+202E shows "exe.gpj" as "jpg.exe"), and line and paragraph separators. A run's label or a folder may hold other
# format characters (a zero-width joiner in an emoji, a zero-width non-joiner in Persian, a soft hyphen).
_SPOOFING = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


def display_problem_character(text: str) -> str | None:
    """The first character of ``text`` that would change how a terminal, a README or a report shows what follows
    it: a control character (Cc), a line or paragraph separator (Zl, Zp), a lone surrogate (Cs), or a bidirectional
    override, embedding or isolate. Labels, names and paths a run records and shows are held to it (not to
    :func:`refused_character`, which is for what generated files hold)."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in _SPOOFING:
            return char
    return None


def check_text(text: Any, what: str, max_chars: int, fix: str) -> str:
    """``text`` if it is a string of at most ``max_chars`` characters without a refused character."""
    if not isinstance(text, str):
        raise TritongenError(f"{what} {shown(text)} is a {type(text).__name__}, not text", fix)
    if len(text) > max_chars:
        raise TritongenError(
            f"{what} '{shown(text, 40)}' is {len(text)} characters long, above the limit of {max_chars}", fix
        )
    char = refused_character(text)
    if char is not None:
        name = unicodedata.name(char, "")
        described = f"U+{ord(char):04X}" + (f" ({name})" if name else "")
        raise TritongenError(f"{what} '{shown(text)}' contains the control character {described}", fix)
    return text


def check_name(name: Any, what: str) -> str:
    """A model, tensor or step name: text, at most :data:`MAX_NAME_CHARS`, no control characters."""
    return check_text(
        name, what, MAX_NAME_CHARS, f"use a name of at most {MAX_NAME_CHARS} letters, digits, '_', '-' and '.'"
    )


def check_label(label: Any, where: str) -> str:
    """One class label (``where`` says which, e.g. ``id2label[3]``)."""
    return check_text(
        label,
        f"label {where}",
        MAX_LABEL_CHARS,
        f"write label names of at most {MAX_LABEL_CHARS} characters on one line, without control characters",
    )


def check_labels(labels: Iterable[Any], where: str) -> tuple[str, ...]:
    """Every label of a classifier, at most :data:`MAX_LABELS` of them."""
    labels = tuple(labels)
    if len(labels) > MAX_LABELS:
        raise TritongenError(
            f"{where} has {len(labels)} labels, above the limit of {MAX_LABELS}",
            "give one label per class of the model",
        )
    return tuple(check_label(label, f"{where}[{i}]") for i, label in enumerate(labels))


def check_class_index(key: Any, where: str, count: int | None = None) -> int:
    """An ``id2label`` key: a non-negative integer (or its decimal text) below ``count`` (or :data:`MAX_LABELS`)."""
    limit = MAX_LABELS if count is None else count
    fix = f'write id2label with keys "0", "1", ... up to the number of classes - 1 (at most {MAX_LABELS - 1})'
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise TritongenError(f"{where} key {shown(key)} is not a class index", fix)
    if isinstance(key, str):
        if not (key.isascii() and key.isdigit()) or len(key) > len(str(MAX_LABELS)):
            raise TritongenError(f"{where} key '{shown(key)}' is not a class index below {limit}", fix)
        key = int(key)
    if not 0 <= key < limit:
        raise TritongenError(f"{where} key {shown(key)} is outside 0..{limit - 1}", fix)
    return key


def check_host(host: Any, option: str = "--host") -> str:
    """``host`` if it is an IP address, or a host name that resolves here; anything else is refused."""
    fix = "pass an IP address (127.0.0.1, 0.0.0.0 for every interface, ::1) or a host name that resolves here"
    if not isinstance(host, str) or not host or len(host) > MAX_HOST_CHARS:
        raise TritongenError(f"{option} '{shown(host)}' is not an IP address or a host name", fix)
    address, _, scope = host.partition("%")
    try:
        ipaddress.ip_address(address)
        if not scope or (":" in address and _SCOPE_RE.fullmatch(scope)):
            return host
    except ValueError:
        pass
    if not _HOST_NAME_RE.fullmatch(host):
        raise TritongenError(f"{option} '{shown(host)}' is not an IP address or a host name", fix)
    if not _resolves(host, RESOLVE_TIMEOUT_S):
        raise TritongenError(
            f"{option} '{host}' does not resolve to an address here within {RESOLVE_TIMEOUT_S:g} s", fix
        )
    return host


def _resolves(host: str, timeout_s: float) -> bool:
    """Whether ``getaddrinfo`` finds an address for ``host`` within ``timeout_s`` (it has no timeout itself)."""
    found: list[bool] = []

    def lookup() -> None:
        try:
            found.append(bool(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)))
        except (OSError, UnicodeError):
            found.append(False)

    thread = threading.Thread(target=lookup, name="tritongen-resolve", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(found and found[0])
