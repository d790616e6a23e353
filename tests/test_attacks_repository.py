"""Issue 10's repository attacks, through the real CLI (``tritongen.cli.main``): what Triton would load but no
manifest vouches for, manifests that lie or do not parse, and signatures that are missing, stale or another key's.

Every case copies a good signed build, changes it as an attacker would, and runs ``verify`` (and ``serve``, with a
``--server-bin`` that would leave a marker file if the server were ever started): exit code 1, exactly one
``error:`` line, no traceback, nothing written, no marker.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests import factories
from tests.keys import write_key_pair
from tests.test_bad_input import _assert_one_clean_line, _run
from tritongen.manifest import sha256_file

CONV = ["--input", "x:FP32:3,32,32", "--max-batch-size", "4"]
MANIFEST = "conv/1/tritongen/manifest.json"


@dataclass
class World:
    root: Path
    repo: Path  # a good build of 'conv', signed with `key`; cases work on copies
    key: Path
    pub: Path
    other_pub: Path
    rsa_pub: Path
    server_bin: Path  # touches `marker` when run: serve must refuse before it
    marker: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("attacks_repository")
    conv = factories.save_model(
        factories.make_small_conv(), root / "conv.pt", "torchscript-trace", factories.small_conv_inputs()
    )
    repo = root / "repo"
    assert _run(["build", str(conv), "--name", "conv", "--repo", str(repo), *CONV])[0] == 0
    key, pub = write_key_pair(root, "signing", ec.generate_private_key(ec.SECP256R1()))
    _, other_pub = write_key_pair(root, "other", ec.generate_private_key(ec.SECP256R1()))
    _, rsa_pub = write_key_pair(root, "rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    (root / "encrypted.pem").write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    code, out, err = _run(["sign", str(repo), "--private-key", str(key)])
    assert code == 0, err
    marker = root / "SERVER_STARTED"
    server_bin = root / "fake-tritonserver"
    server_bin.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    server_bin.chmod(0o755)
    return World(root, repo, key, pub, other_pub, rsa_pub, server_bin, marker)


def _snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): sha256_file(p) if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
        if not p.is_symlink()
    }


def _rewrite_manifest(repo: Path, change: Callable[[dict], None]) -> None:
    path = repo / MANIFEST
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _add_version(repo: Path) -> None:
    (repo / "conv" / "2").mkdir()
    shutil.copy(repo / "conv" / "1" / "model.py", repo / "conv" / "2" / "model.py")
    shutil.copy(repo / "conv" / "1" / "model.onnx", repo / "conv" / "2" / "model.onnx")


def _rehashed_model_py(repo: Path) -> None:
    """The attacker swaps model.py and rewrites the manifest with its fresh sha256: plain verify cannot tell."""
    model_py = repo / "conv" / "1" / "model.py"
    model_py.write_text(model_py.read_text() + "\nimport os  # and anything else\n")
    _rewrite_manifest(repo, lambda d: d["files"].update({"1/model.py": sha256_file(model_py)}))


def _hidden_model(repo: Path) -> None:
    shutil.copytree(repo / "conv", repo / ".conv")
    text = (repo / ".conv" / "config.pbtxt").read_text()
    (repo / ".conv" / "config.pbtxt").write_text(text.replace('name: "conv"', 'name: ".conv"'))


# (case id, change to the copy of the signed repository, extra arguments, words the error line must contain,
#  whether `serve` is run too)
CASES: list[tuple[str, Callable[[Path], None], list[str], tuple[str, ...], bool]] = [
    ("version folder added by hand", _add_version, [], ("conv/2", "no manifest"), True),
    (
        "numpy.py dropped into a verified version folder",
        lambda r: (r / "conv/1/numpy.py").write_text("open('PWNED', 'w')\n"),
        [],
        ("conv/1/numpy.py", "not listed"),
        True,
    ),
    (
        "model2.py dropped into a verified version folder",
        lambda r: (r / "conv/1/model2.py").write_text("raise SystemExit\n"),
        [],
        ("conv/1/model2.py", "not listed"),
        False,
    ),
    (
        "shared library dropped into a verified version folder",
        lambda r: (r / "conv/1/libevil.so").write_bytes(b"\x7fELF" + bytes(60)),
        [],
        ("conv/1/libevil.so", "not listed"),
        False,
    ),
    (
        "file dropped beside config.pbtxt",
        lambda r: (r / "conv/extra.py").write_text("x = 1\n"),
        [],
        ("conv/extra.py", "not listed"),
        True,
    ),
    (
        "manifest deleted",
        lambda r: (r / MANIFEST).unlink(),
        [],
        ("'conv' has no manifest", "--allow-unverified conv"),
        True,
    ),
    ("hidden model folder", _hidden_model, [], ("'.conv'", "hidden"), True),
    (
        "manifest 'files' is a list",
        lambda r: _rewrite_manifest(r, lambda d: d.update(files=sorted(d["files"]))),
        [],
        ("'files' as a JSON list",),
        True,
    ),
    (
        "manifest path with ..",
        lambda r: _rewrite_manifest(r, lambda d: d["files"].update({"../x": "0" * 64})),
        [],
        ("'../x'", ".."),
        False,
    ),
    (
        "manifest path that is absolute",
        lambda r: _rewrite_manifest(r, lambda d: d["files"].update({"/etc/passwd": "0" * 64})),
        [],
        ("'/etc/passwd'", "absolute"),
        False,
    ),
    (
        "manifest digest that is not sha256 hex",
        lambda r: _rewrite_manifest(r, lambda d: d["files"].update({"1/model.py": 7})),
        [],
        ("'1/model.py'", "64 lowercase hex"),
        False,
    ),
    (
        "manifest of an unknown schema",
        lambda r: _rewrite_manifest(r, lambda d: d.update(manifest_schema=99)),
        [],
        ("manifest_schema 99",),
        False,
    ),
    (
        "manifest that is not JSON",
        lambda r: (r / MANIFEST).write_text("{" * 100_000),
        [],
        ("not valid UTF-8 JSON",),
        False,
    ),
    (
        "symlink in a version folder",
        lambda r: (r / "conv/1/linked.py").symlink_to(r / "conv/1/model.py"),
        [],
        ("conv/1/linked.py", "symbolic link"),
        False,
    ),
    (
        "rewritten manifest with fresh hashes, checked with the public key",
        _rehashed_model_py,
        ["--public-key", "{pub}"],
        ("differs from what was signed", "changed since signing: conv/1/model.py"),
        True,
    ),
    (
        "link at the top of a signed repository, checked with the public key",
        lambda r: (r / "toplink").symlink_to("/etc/hostname"),
        ["--public-key", "{pub}"],
        ("toplink", "remove it"),  # verify: no signature covers it; serve: the served copy refuses it first
        True,
    ),
    (
        "unsigned repository with --public-key",
        lambda r: (r / ".tritongen-signature.sig").unlink(),
        ["--public-key", "{pub}"],
        ("is not signed",),
        True,
    ),
    (
        "another key's public key",
        lambda r: None,
        ["--public-key", "{other_pub}"],
        ("not made with the private key",),
        True,
    ),
    (
        "an RSA public key",
        lambda r: None,
        ["--public-key", "{rsa_pub}"],
        ("holds an RSA public key, not an elliptic-curve",),
        False,
    ),
    ("the private key given as public key", lambda r: None, ["--public-key", "{key}"], ("holds a private key",), False),
    ("public key file missing", lambda r: None, ["--public-key", "{root}/nope.pub"], ("does not exist",), False),
    (
        "signature that is not a signature",
        lambda r: (r / ".tritongen-signature.sig").write_bytes(b"\x00garbage"),
        ["--public-key", "{pub}"],
        ("cannot be checked",),
        False,
    ),
]


def _argv(world: World, args: list[str]) -> list[str]:
    fields = {
        "pub": world.pub,
        "other_pub": world.other_pub,
        "rsa_pub": world.rsa_pub,
        "key": world.key,
        "root": world.root,
    }
    return [a.format(**fields) for a in args]


@pytest.mark.parametrize("case, change, args, words, serve", CASES, ids=[c[0] for c in CASES])
def test_repository_attack_is_refused_by_verify_and_serve(
    world, tmp_path, monkeypatch, case, change, args, words, serve
):
    monkeypatch.chdir(tmp_path)
    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo, symlinks=True)
    change(repo)
    before = _snapshot(repo)
    commands = [["verify", str(repo)]] + (
        [["serve", str(repo), "--server-bin", str(world.server_bin)]] if serve else []
    )
    for command in commands:
        code, out, err = _run(command + _argv(world, args))
        _assert_one_clean_line(f"{command[0]}: {case}", code, out, err, words)
        assert code == 1
        assert _snapshot(repo) == before, "the repository was changed"
        assert not world.marker.exists(), "serve started the server"
        assert not (tmp_path / "PWNED").exists() and not (repo / "conv" / "1" / "PWNED").exists(), "code ran"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"], "output left behind"
        key_text = world.key.read_text()
        assert key_text.splitlines()[1] not in out + err, "a key was printed"


def test_rewritten_manifest_passes_plain_verify_but_not_the_signature(world, tmp_path):
    """The manifest attests itself: only the signature tells the rewritten one from the build's."""
    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo)
    _rehashed_model_py(repo)
    assert _run(["verify", str(repo)])[0] == 0
    code, out, err = _run(["verify", str(repo), "--public-key", str(world.pub)])
    _assert_one_clean_line("rewritten manifest", code, out, err, ("differs from what was signed",))


def test_a_model_under_the_name_a_signature_had_at_the_top_is_not_left_out_of_it(world, tmp_path):
    """Signed with --signature REPO/release.sig, the signature kept elsewhere: the library leaves out everything
    under a name the signature lists as left out, so a model folder named release.sig (its manifest made to fit)
    verified as signed and served."""
    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo)
    (repo / ".tritongen-signature.sig").unlink()
    assert _run(["sign", str(repo), "--private-key", str(world.key), "--signature", str(repo / "release.sig")])[0] == 0
    signature = tmp_path / "release.sig"
    (repo / "release.sig").rename(signature)
    args = ["--public-key", str(world.pub), "--signature", str(signature)]
    assert _run(["verify", str(repo), *args])[0] == 0  # the signature kept apart checks as before
    shutil.copytree(repo / "conv", repo / "release.sig")
    config = repo / "release.sig" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "conv"', 'name: "release.sig"'))
    model_py = repo / "release.sig" / "1" / "model.py"
    model_py.write_text(model_py.read_text() + "\nimport os  # and anything else\n")
    manifest = repo / "release.sig" / "1" / "tritongen" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["files"].update({"1/model.py": sha256_file(model_py), "config.pbtxt": sha256_file(config)})
    manifest.write_text(json.dumps(data))
    assert _run(["verify", str(repo)])[0] == 0  # its manifest fits: only the signature can tell
    code, out, err = _run(["verify", str(repo), *args])
    _assert_one_clean_line("model under a signature's name", code, out, err, ("release.sig is left out", "a folder"))
    code, out, err = _run(["serve", str(repo), *args, "--server-bin", str(world.server_bin)])
    _assert_one_clean_line("serve: model under a signature's name", code, out, err, ("release.sig is left out",))
    assert not world.marker.exists(), "serve started the server"


def test_validate_refuses_a_hidden_model_folder(world, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo)
    _hidden_model(repo)
    code, out, err = _run(["validate", str(repo)])
    _assert_one_clean_line("validate: hidden model folder", code, out, err, ("'.conv' has a hidden name",))


@pytest.mark.parametrize(
    "case, args, words",
    [
        ("missing private key", ["--private-key", "{root}/nope.pem"], ("does not exist",)),
        ("public key given as private key", ["--private-key", "{pub}"], ("holds a public key",)),
        ("private key that is not PEM", ["--private-key", "{root}/conv.pt"], ("not a PEM private key",)),
        ("RSA private key", ["--private-key", "{root}/rsa.pem"], ("holds an RSA private key, not an elliptic-curve",)),
        ("password-protected private key", ["--private-key", "{root}/encrypted.pem"], ("encrypted with a password",)),
        (
            "signature inside a model folder",
            ["--private-key", "{key}", "--signature", "{repo}/conv/1/sig"],
            ("inside a model folder",),
        ),
    ],
)
def test_sign_refuses_bad_keys_and_places(world, tmp_path, case, args, words):
    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo)
    (repo / ".tritongen-signature.sig").unlink()
    before = _snapshot(repo)
    code, out, err = _run(["sign", str(repo), *[a.format(**{**vars(world), "repo": repo}) for a in args]])
    _assert_one_clean_line(f"sign: {case}", code, out, err, words)
    assert _snapshot(repo) == before, "something was written"


@pytest.mark.parametrize(
    "make, said",
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "an RSA"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "a {part} key on the curve secp256k1"),
        (ed25519.Ed25519PrivateKey.generate, "an Ed25519"),
    ],
)
def test_a_key_of_another_kind_is_named_in_words(tmp_path, make, said):
    from tritongen.errors import TritongenError
    from tritongen.signing import check_private_key, check_public_key

    private, public = write_key_pair(tmp_path, "k", make())
    for check, path, part in ((check_private_key, private, "private"), (check_public_key, public, "public")):
        with pytest.raises(TritongenError) as err:
            check(path)
        kind = said.format(part=part) if "{part}" in said else f"{said} {part} key"
        assert err.value.problem == (
            f"{part} key file {path} holds {kind}, not an elliptic-curve P-256, P-384 or P-521 key"
        )


def test_sign_refuses_a_repository_that_does_not_verify(world, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo)
    (repo / ".tritongen-signature.sig").unlink()
    (repo / "conv" / "1" / "numpy.py").write_text("")
    before = _snapshot(repo)
    code, out, err = _run(["sign", str(repo), "--private-key", str(world.key)])
    _assert_one_clean_line("sign: unlisted file", code, out, err, ("conv/1/numpy.py",))
    assert _snapshot(repo) == before


def test_an_empty_repository_is_neither_signed_nor_verified(world, tmp_path):
    """A wrongly mounted, empty folder must not pass the integrity gate (validate, serve and deploy refuse it too)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv, case in (
        (["verify", str(empty)], "verify"),
        (["sign", str(empty), "--private-key", str(world.key)], "sign"),
    ):
        code, out, err = _run(argv)
        _assert_one_clean_line(f"{case}: empty repository", code, out, err, ("empty holds no model folders",))
    assert list(empty.iterdir()) == []  # no signature written


def test_a_changed_file_heads_the_list_before_the_stale_bytecode_it_leaves(world, tmp_path):
    import importlib.util
    import py_compile

    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo)
    model_py = repo / "conv" / "1" / "model.py"
    model_py.write_text(model_py.read_text() + "\n# changed\n")
    old = tmp_path / "old_model.py"
    shutil.copy(world.repo / "conv" / "1" / "model.py", old)
    py_compile.compile(str(old), cfile=importlib.util.cache_from_source(str(model_py)), doraise=True)
    (repo / "conv" / "config.pbtxt").write_text((repo / "conv" / "config.pbtxt").read_text() + "\n")
    code, out, err = _run(["verify", str(repo)])
    assert code != 0 and "__pycache__" not in err.splitlines()[0].split("(and")[0], err


def test_signed_repository_verifies_and_serve_accepts_it(world, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo)
    code, out, err = _run(["verify", str(repo), "--public-key", str(world.pub)])
    assert code == 0 and "is valid for the public key" in out, err
    code, out, err = _run(["serve", str(repo), "--public-key", str(world.pub), "--docker"])
    # signature accepted; a --target local model imports onnxruntime, which NGC's image lacks: the deploy steps
    assert code == 0 and "tritongen deploy" in out and "onnxruntime==" in out, err
    assert world.key.read_text().splitlines()[1] not in out + err


def test_signature_outside_the_repository_and_resigning(world, tmp_path):
    """--signature elsewhere; a removed file fails the check; signing again accepts the repository as it is now."""
    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo)
    (repo / ".tritongen-signature.sig").unlink()
    sig = tmp_path / "conv.sig"
    assert _run(["sign", str(repo), "--private-key", str(world.key), "--signature", str(sig)])[0] == 0
    assert not (repo / ".tritongen-signature.sig").exists() and sig.is_file()
    check = ["verify", str(repo), "--public-key", str(world.pub), "--signature", str(sig)]
    assert _run(check)[0] == 0
    shutil.copytree(repo / "conv", repo / "conv2")
    code, out, err = _run(check)
    _assert_one_clean_line(
        "added model",
        code,
        out,
        err,
        ("differs from what was signed", "(added since signing: conv2/1/model.onnx", "conv2/config.pbtxt"),
    )
    shutil.rmtree(repo / "conv2")
    (repo / "conv" / "warmup" / "x").unlink()
    code, out, err = _run(check)
    _assert_one_clean_line("removed file", code, out, err, ("(removed since signing: conv/warmup/x)",))
    assert "in model" not in err, err


def test_verify_without_a_public_key_says_the_signature_was_not_checked(world, tmp_path):
    """A signed repository verified against its manifests only: the summary says the signature went unchecked and
    how to check it; with --public-key, or without a signature, no such line."""
    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo)
    code, out, err = _run(["verify", str(repo)])
    assert code == 0 and "files match their manifests" in out, err
    assert out.splitlines()[-1] == (
        f"hint: signature {repo / '.tritongen-signature.sig'} was not checked (no --public-key): pass --public-key "
        "with the signer's public key to check that the files are as signed"
    ), out
    code, out, err = _run(["verify", str(repo), "--public-key", str(world.pub)])
    assert code == 0 and "hint:" not in out, out
    sig = tmp_path / "elsewhere.sig"
    (repo / ".tritongen-signature.sig").rename(sig)
    code, out, err = _run(["verify", str(repo)])
    assert code == 0 and "hint:" not in out, out
    code, out, err = _run(["verify", str(repo), "--signature", str(sig)])
    assert code == 0 and f"hint: signature {sig} was not checked" in out, out


def test_hand_written_model_is_accepted_only_by_name(world, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo)
    (repo / "hand" / "1").mkdir(parents=True)
    (repo / "hand" / "1" / "model.py").write_text("")
    code, out, err = _run(["verify", str(repo)])
    _assert_one_clean_line("hand-written", code, out, err, ("'hand' has no manifest",))
    code, out, err = _run(["verify", str(repo), "--allow-unverified", "hand"])
    assert code == 0 and "hand" in out, err


def test_corpus_is_large_enough():
    assert len(CASES) >= 9


def test_the_fake_server_marks_a_start(world, tmp_path):
    """Control for the cases above: on the untouched repository serve does get to start the (fake) server."""
    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo)
    code, out, err = _run(
        ["serve", str(repo), "--public-key", str(world.pub), "--server-bin", str(world.server_bin), "--timeout-s", "5"]
    )
    try:
        assert code == 1 and "tritonserver exited" in err and world.marker.exists()
    finally:
        world.marker.unlink(missing_ok=True)


def test_a_signature_mismatch_names_the_changed_files_not_their_digests():
    """The library's list of differences is a Python list's repr: a digest holding both quotes escapes the quoting
    of its whole entry; the paths are named all the same, the digests never."""
    from tritongen.signing import _failure

    both = "Digest(algorithm='sha256', digest_value=" + repr(b"<W\x00O'x)\"") + ")"  # bytes with ' and "
    plain = "Digest(algorithm='sha256', digest_value=" + repr(b"\x19") + ")"
    items = [
        "Extra files found in model 'repo': a/x.txt, a/y.txt",
        "Missing files in model 'repo': b/z.txt",
        f"Hash mismatch for 'resnet/1/model.onnx': Expected '{both}', Actual '{plain}'",
        f"Hash mismatch for 'resnet/config.pbtxt': Expected '{plain}', Actual '{both}'",
    ]
    assert "\\'" in str(items)  # the quoting the old pattern match did not survive
    problem, _ = _failure(Path("repo"), Path("s.sig"), Path("k.pub"), ValueError(f"Signature mismatch: {items}"))
    assert problem == (
        "model repository repo differs from what was signed (changed since signing: resnet/1/model.onnx, "
        "resnet/config.pbtxt; added since signing: a/x.txt, a/y.txt; removed since signing: b/z.txt)"
    )


def test_a_changed_file_whose_digest_holds_a_quote_is_named_through_the_cli(world, tmp_path):
    """The digests of the changed file are bytes that hold a double quote: the error line names the file only."""
    import hashlib

    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo)
    model_py = repo / "conv" / "1" / "model.py"
    text = model_py.read_text()
    extra = next(f"\n# {i}\n" for i in range(10_000) if b'"' in hashlib.sha256((text + f"\n# {i}\n").encode()).digest())
    model_py.write_text(text + extra)
    _rewrite_manifest(repo, lambda d: d["files"].update({"1/model.py": sha256_file(model_py)}))
    code, out, err = _run(["verify", str(repo), "--public-key", str(world.pub)])
    _assert_one_clean_line("quoted digest", code, out, err, ("differs from what was signed",))
    assert "(changed since signing: conv/1/model.py, conv/1/tritongen/manifest.json):" in err, err
    assert "Digest" not in err and "\\x" not in err, err


def test_a_model_of_a_thousand_nested_folders_is_one_line_in_validate_verify_sign_and_serve(world, tmp_path):
    """Found by an attacker: validate, verify, sign and serve ended in RecursionError tracebacks (and verify
    --public-key said the signature "cannot be checked (RecursionError ...)")."""
    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo)
    folder = repo / "conv" / "1"
    for _ in range(11):  # os.makedirs recurses too: 100 levels at a time
        folder = folder.joinpath(*["d"] * 100)
        folder.mkdir(parents=True)
    try:
        for argv in (
            ["validate", str(repo)],
            ["verify", str(repo)],
            ["verify", str(repo), "--public-key", str(world.pub)],
            ["sign", str(repo), "--private-key", str(world.key)],
            ["serve", str(repo), "--public-key", str(world.pub), "--server-bin", str(world.server_bin)],
        ):
            code, out, err = _run(argv)
            _assert_one_clean_line(argv[0], code, out, err, ("nested more than 64 deep",))
        assert not world.marker.exists()
    finally:  # pytest's clean-up of old temp folders uses shutil.rmtree, which recurses as deep: removed here
        deep = repo / "conv" / "1" / "d"
        while deep.exists():
            below = deep
            while (below / "d").is_dir():
                below = below / "d"
            below.rmdir()


def test_loops_of_symbolic_links_are_one_clean_line_each(world, tmp_path):
    """Path.resolve() raises RuntimeError on a loop: validate (the link check), verify (a manifest path through a
    loop) and a signature path through a loop each ended in a traceback."""
    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo)
    (repo / "conv" / "1" / "loop").symlink_to("loop")
    code, out, err = _run(["validate", str(repo)])
    _assert_one_clean_line("validate: link loop", code, out, err, ("1 problem in model repository",))
    assert "'conv/1/loop' is a symbolic link that loops" in err, err  # the problem, listed below the error line
    (repo / "conv" / "1" / "loop").unlink()
    (repo / "conv" / "1" / "tritongen" / "loop").symlink_to("loop")
    _rewrite_manifest(repo, lambda d: d["files"].update({"1/tritongen/loop/x": "0" * 64}))
    for args in (["verify", str(repo)], ["sign", str(repo), "--private-key", str(world.key)]):
        code, out, err = _run(args)
        _assert_one_clean_line(f"{args[0]}: manifest path through a loop", code, out, err, ("loop of symbolic links",))
    (tmp_path / "sigloop").symlink_to("sigloop")
    code, out, err = _run(
        ["verify", str(world.repo), "--public-key", str(world.pub), "--signature", str(tmp_path / "sigloop" / "x.sig")]
    )
    _assert_one_clean_line("verify: signature path through a loop", code, out, err, ("loop of symbolic links",))


def test_sign_signs_with_the_key_bytes_it_checked(world, tmp_path, monkeypatch):
    """The key was checked on one read and the library read the path again: a key swapped in between signed."""
    from tritongen import signing

    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo)
    (repo / ".tritongen-signature.sig").unlink()
    key = tmp_path / "key.pem"
    shutil.copy(world.key, key)
    checked = signing.check_private_key

    def check_then_swap(path):
        data = checked(path)
        other, _ = write_key_pair(tmp_path, "swapped", ec.generate_private_key(ec.SECP256R1()))
        shutil.copy(other, key)
        return data

    monkeypatch.setattr(signing, "check_private_key", check_then_swap)
    signing.sign_repository(repo, key)
    signing.check_signature(repo, world.pub)  # signed with the key that was checked, not the one swapped in


def test_only_the_forms_sign_leaves_out_are_taken_from_a_signature(tmp_path):
    """A signature's list of paths left out is taken as the library wrote it: a top-level `__pycache__` (as
    `model_signing --ignore-paths __pycache__` writes) hid a whole model folder of that name."""
    from tritongen.signing import ignored_path_problems

    (tmp_path / "__pycache__" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "__pycache__").mkdir(parents=True)
    (tmp_path / "release.sig").write_text("{}")
    fine = ["m/tritongen-rollout.json", "m/tritongen-rollout.lock", "m/1/__pycache__", "release.sig", "gone.sig"]
    assert ignored_path_problems(tmp_path, fine) == []
    for entry in ("__pycache__", "__pycache__/__pycache__", "../x/tritongen-rollout.json", "m/../m", "", "m/1/x", 7):
        (problem,) = ignored_path_problems(tmp_path, [entry])
        assert "which tritongen sign never does" in problem, (entry, problem)


@pytest.mark.parametrize("target", ["a file", "nothing"])
def test_a_link_at_the_top_of_the_repository_is_refused_whatever_it_leads_to(world, tmp_path, target):
    """Found by an attacker: verify and validate looked at folders only, so a link at the top of the repository to a
    file (or to nothing) passed both, serve copied it into the served folder, and Triton loaded the model folder put
    where it led after the checks (in a poll round, or in a race with its first scan), code and all."""
    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo)
    elsewhere = tmp_path / "elsewhere"
    if target == "a file":
        elsewhere.write_text("a model folder later")
    (repo / "evil").symlink_to(elsewhere)
    for argv in (
        ["validate", str(repo)],
        ["verify", str(repo)],
        ["serve", str(repo), "--server-bin", str(world.server_bin)],
    ):
        code, out, err = _run(argv)
        _assert_one_clean_line(argv[0], code, out, err, ("'evil' at the top of", "is a symbolic link"))
    assert not world.marker.exists()


def test_a_link_at_the_top_is_not_copied_into_the_served_folder(tmp_path):
    """The served copy is what Triton reads: a link there led it out of the copy, to what was there by then."""
    from tritongen.errors import TritongenError
    from tritongen.server.snapshot import snapshot_from_repository

    repo = tmp_path / "repo"
    (repo / "m" / "1").mkdir(parents=True)
    (repo / "m" / "config.pbtxt").write_text('name: "m"\n')
    (repo / "evil").symlink_to(tmp_path / "later")
    with pytest.raises(TritongenError, match="'evil' at the top of .* is a symbolic link"):
        snapshot_from_repository(repo, tmp_path / "copy")
