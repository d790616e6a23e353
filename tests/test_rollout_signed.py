"""A server whose repository was checked against a signature (``serve --public-key``) loads only signed files
through rollout and rollback too: the bytes sent are held to the digests the signature lists under that key (the
key found by the server's port, or given), so a version built or changed after signing is refused and the live
version keeps serving."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from tests.conftest import free_ports
from tests.keys import write_key_pair
from tritongen.errors import TritongenError
from tritongen.server.admin import SIGNING_KEY_NAME, LocalServer
from tritongen.server.spec import ADMIN_HEADER

torch = pytest.importorskip("torch")

NAME = "tiny"
EXAMPLE = {"x": np.arange(8, dtype=np.float32).reshape(2, 4)}


def _build(repo, version_seed: int, new_version: bool) -> None:
    import tritongen

    torch.manual_seed(version_seed)
    tritongen.build(torch.nn.Linear(4, 3), example_inputs=EXAMPLE, name=NAME, repo=repo, new_version=new_version)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("rollout_signed")
    repo = root / "repo"
    _build(repo, 0, False)
    _build(repo, 1, True)  # versions 1 and 2
    return repo


@pytest.fixture
def signed(built, tmp_path):
    """A copy of the repository signed with a new key: (repo, private key, public key)."""
    from tritongen.signing import sign_repository

    repo = shutil.copytree(built, tmp_path / "repo")
    private, public = write_key_pair(tmp_path)
    sign_repository(repo, private)
    return repo, private, public


def _files(repo, version: int, public):
    from tritongen.deploy.rollout import RolloutSpec, _model_files, _signed
    from tritongen.verify import manifest_digests

    spec = RolloutSpec(repo=repo, name=NAME, to_version=version, public_key=public)
    nowhere = LocalServer("127.0.0.1:1", None)  # no server of tritongen's there: the key given decides
    signed_files = nowhere.signed_digests(repo, public)
    return _model_files(repo / NAME, version, manifest_digests(repo / NAME), _signed(spec, signed_files))


def test_the_signed_digests_are_the_files_sha256_under_the_right_key_only(signed, tmp_path):
    from tritongen.signing import signed_digests

    repo, _, public = signed
    digests = signed_digests(repo, public)
    on_disk = {
        p.relative_to(repo).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in repo.rglob("*")
        if p.is_file() and p.name != ".tritongen-signature.sig"
    }
    assert digests == on_disk and f"{NAME}/2/model.onnx" in digests
    _, other = write_key_pair(tmp_path, "other")
    with pytest.raises(TritongenError, match="was not made with the private key of"):
        signed_digests(repo, other)
    (repo / ".tritongen-signature.sig").unlink()
    with pytest.raises(TritongenError, match="is not signed: no signature file"):
        signed_digests(repo, public)


def test_a_signature_whose_listed_digest_was_rewritten_is_refused(signed):
    """The attacker rewrites the digest of model.py in the signed payload (the envelope's signature then no longer
    matches): no digests come back, only the error."""
    import base64

    from tritongen.signing import signed_digests

    repo, _, public = signed
    path = repo / ".tritongen-signature.sig"
    bundle = json.loads(path.read_text())
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"]).decode()
    old = signed_digests(repo, public)[f"{NAME}/2/model.py"]
    assert old in payload
    forged = payload.replace(old, hashlib.sha256(b"import os").hexdigest())
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(forged.encode()).decode()
    path.write_text(json.dumps(bundle))
    with pytest.raises(TritongenError) as err:
        signed_digests(repo, public)
    assert str(path) in err.value.problem and "Traceback" not in err.value.message


def test_the_signed_files_are_sent_and_others_refused(signed):
    repo, private, public = signed
    files = _files(repo, 2, public)
    assert {"2/model.py", "2/model.onnx"} <= set(files)
    assert all(data == (repo / NAME / rel).read_bytes() for rel, data in files.items())

    _build(repo, 2, True)  # version 3: built after signing; its manifest is in order, its signature missing
    with pytest.raises(TritongenError) as err:
        _files(repo, 3, public)
    assert "tiny/3/" in err.value.problem and "is not in what the repository's signature lists" in err.value.problem
    assert f"tritongen sign {repo} --private-key KEY" in err.value.fix

    from tritongen.signing import sign_repository

    sign_repository(repo, private)  # signed again: now it is what was signed
    assert "3/model.onnx" in _files(repo, 3, public)


def test_a_file_changed_after_signing_is_refused_even_with_its_manifest_rewritten(signed):
    """The attacker's move that plain verify cannot see: a new model.py and a manifest that lists it."""
    import tritongen
    from tritongen.manifest import sha256_file

    repo, _, public = signed
    model_py = repo / NAME / "2" / "model.py"
    model_py.write_text(model_py.read_text() + "\nimport os  # and anything else\n")
    manifest = repo / NAME / "2" / "tritongen" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["files"]["2/model.py"] = sha256_file(model_py)
    manifest.write_text(json.dumps(data))
    tritongen.verify(repo)  # the manifests agree with the files: only the signature tells
    with pytest.raises(TritongenError, match="tiny/2/model.py differs from what the repository's signature lists"):
        _files(repo, 2, public)


def test_a_signed_file_that_is_gone_is_named(signed):
    from tritongen.deploy.rollout import RolloutSpec, _model_files, _signed

    repo, _, public = signed
    (repo / NAME / "2" / "model.onnx").unlink()
    spec = RolloutSpec(repo=repo, name=NAME, to_version=2, public_key=public)
    with pytest.raises(TritongenError, match="tiny/2/model.onnx is signed but missing"):
        _model_files(repo / NAME, 2, None, _signed(spec, LocalServer("127.0.0.1:1", None).signed_digests(repo, public)))


@pytest.mark.server
@pytest.mark.slow
def test_rollout_into_a_server_that_checks_signatures_loads_signed_versions_only(
    signed, server_install, tmp_path, monkeypatch
):
    """serve --public-key keeps its key; rollout finds it by the port (no key passed), refuses version 3 built
    after signing (version 2 keeps answering), and rolls it out once the repository is signed again."""
    import tritongen
    from tritongen.client import Triton, host_port_from_url
    from tritongen.server.admin import local_server_at
    from tritongen.signing import sign_repository

    repo, private, public = signed
    http, grpc, metrics = free_ports(3)
    x = EXAMPLE["x"][:1]
    ports = {"http_port": http, "grpc_port": grpc, "metrics_port": metrics}
    with tritongen.serve(repo, public_key=public, model_control="explicit", **ports) as server:
        kept = local_server_at(host_port_from_url(server.grpc_url)).signing_key()
        assert kept is not None and kept.read_bytes() == public.read_bytes()
        _found_only_where_it_alone_listens(http, monkeypatch)
        with Triton(server.grpc_url, "grpc", headers=server.admin_headers("grpc")) as triton:
            assert triton.ready_versions(NAME) == [2]
            before = list(triton.infer(NAME, {"x": x}).values())[0]

        _build(repo, 2, True)  # version 3, after signing
        gate = {"max_p99_ratio": 1000.0, "min_cosine": -1.0, "min_top1": 0.0, "out": tmp_path / "report"}
        with pytest.raises(TritongenError) as err:
            tritongen.rollout(repo, NAME, to_version=3, url=server.grpc_url, **gate)
        assert "tiny/3/" in err.value.problem and "signature" in err.value.problem
        with Triton(server.grpc_url, "grpc", headers=server.admin_headers("grpc")) as triton:
            assert triton.ready_versions(NAME) == [2]  # refused before anything was loaded
            assert not any(m["name"].endswith("__tritongen_candidate") for m in triton.repository_index())
            np.testing.assert_allclose(list(triton.infer(NAME, {"x": x}).values())[0], before)
        # the same server by another of this machine's names, its admin key passed by hand: the same check
        elsewhere = {"url": f"0.0.0.0:{grpc}", "headers": server.admin_headers("grpc")}
        with pytest.raises(TritongenError) as err:
            tritongen.rollout(repo, NAME, to_version=3, **elsewhere, **gate)
        assert "tiny/3/" in err.value.problem and "signature" in err.value.problem
        _, other = write_key_pair(tmp_path, "other")  # a key of one's own does not replace the server's
        with pytest.raises(TritongenError, match=f"public key {other} is not the key the server at"):
            tritongen.rollout(repo, NAME, to_version=3, url=server.grpc_url, public_key=other, **gate)

        sign_repository(repo, private)
        result = tritongen.rollout(repo, NAME, to_version=3, url=server.grpc_url, **gate)
        assert result.promoted, result.summary()
        assert "signature: every file sent is the one the repository's signature lists under the server's key" in (
            result.summary()
        )
        back = tritongen.rollback(repo, NAME, url=f"grpc://localhost:{grpc}")  # by name: its key found, held to it
        assert back.promoted and back.to_version == 2, back.summary()

        (repo / ".tritongen-signature.sig").unlink()  # not signed at all: refused, saying why the server cares
        with pytest.raises(TritongenError) as err:
            tritongen.rollout(repo, NAME, to_version=3, url=server.grpc_url, **gate)
        assert "is not signed" in err.value.problem and "checks signatures" in err.value.problem
        assert str(kept) not in err.value.message  # the server's private folder is not the user's business


def _found_only_where_it_alone_listens(port: int, monkeypatch) -> None:
    """The server (on 127.0.0.1) is found by its address, a base path or not; by a name only while nothing else
    listens on an address the name resolves to (``localhost`` may be 127.0.0.1 and ::1: another user's listener on
    the second, whose /proc this user cannot read, could be the one a client reaches). The name here resolves to
    127.0.0.1 and 127.0.0.2, where a decoy listens."""
    import ipaddress
    import socket

    from tritongen.server import ports
    from tritongen.server.admin import local_server_at

    pid = ports.server_pid_at(f"127.0.0.1:{port}")
    assert pid is not None and ports.server_pid_at(f"127.0.0.1:{port}/triton") == pid
    assert ports.server_pid_at(f"localhost:{port}") == pid
    both = frozenset({ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("127.0.0.2")})
    resolve = ports.host_addresses
    monkeypatch.setattr(ports, "host_addresses", lambda host: both if host == "two-homed" else resolve(host))
    assert ports.server_pid_at(f"two-homed:{port}") == pid  # nothing on 127.0.0.2 yet
    assert ports.server_found_at(f"localhost:{port}") == ports.FoundServer(pid, f"127.0.0.1:{port}")
    local = local_server_at(f"two-homed:{port}")  # found while the server alone listens there
    assert local.home is not None and local.connect == f"127.0.0.1:{port}"
    with socket.socket() as decoy:
        decoy.bind(("127.0.0.2", port))
        decoy.listen()
        assert ports.server_pid_at(f"two-homed:{port}") is None and ports.server_pid_at(f"127.0.0.1:{port}") == pid
        # a listener that appeared on the name's other address after the look is not reached: rollout and tune
        # connect (with the admin key) to the address the server was found listening on, not to the name again
        assert local.url(f"http://two-homed:{port}/triton") == f"http://127.0.0.1:{port}/triton"
        assert local.url(f"grpc://two-homed:{port}") == f"grpc://127.0.0.1:{port}"
        assert local.url(f"two-homed:{port}") == f"127.0.0.1:{port}"
        assert local.headers("http")  # the admin key: for the loopback address it connects to
    nowhere = local_server_at("192.0.2.9:8001")  # not this machine's: the URL as given, no key
    assert nowhere.url("grpc://192.0.2.9:8001") == "grpc://192.0.2.9:8001" and nowhere.headers("grpc") == {}


def _server_with_key(folder, public, address: str = "127.0.0.1:1"):
    """A server as rollout and tune find it by its port: its private folder holds the key it checks with."""
    from tritongen.server.admin import LocalServer, write_admin_key, write_signing_key

    folder.mkdir(parents=True)
    write_signing_key(folder, public.read_bytes())
    write_admin_key(folder, "sesame")
    return LocalServer(address, folder)


def test_tune_starts_only_from_the_signed_config_on_such_a_server(signed, tmp_path):
    """tune loads variations of the model's config: into a server that checks signatures (found by the port) the
    config they start from must be the signed one."""
    from tritongen.perf.tune_configs import check_signed_config

    repo, _, public = signed
    config = repo / NAME / "config.pbtxt"
    check_signed_config(LocalServer("127.0.0.1:1", None), repo / NAME, config.read_text())  # none found: no check
    server = _server_with_key(tmp_path / "home", public)
    check_signed_config(server, repo / NAME, config.read_text())  # the signed config
    changed = config.read_text() + "\n# changed\n"
    with pytest.raises(TritongenError) as err:
        check_signed_config(server, repo / NAME, changed)
    assert "is not the one the repository's signature lists" in err.value.problem
    assert "127.0.0.1:1" in err.value.problem and str(public) not in err.value.message


def test_a_key_given_beside_the_servers_own_must_be_that_key(signed, tmp_path):
    """The server's key decides what rollout holds the files to: another key given by hand (with a signature made
    by its holder) is refused, not used in its place; the server's key given again is fine, and errors then name
    it as the server's key, not by the file in the server's private folder."""
    from tritongen.signing import same_public_key

    repo, _, public = signed
    _, other = write_key_pair(tmp_path, "other")
    assert same_public_key(public, public) and not same_public_key(public, other)
    server = _server_with_key(tmp_path / "home", public)
    with pytest.raises(TritongenError) as err:
        server.signed_digests(repo, other)
    assert f"public key {other} is not the key the server at 127.0.0.1:1 checks signatures with" == err.value.problem
    held = server.signed_digests(repo, public)
    assert held is not None and f"{NAME}/2/model.py" in held.digests and held.by_server_key
    by_hand = LocalServer("127.0.0.1:1", None).signed_digests(repo, public)  # no server's key: the given one decides
    assert by_hand is not None and by_hand.digests == held.digests and not by_hand.by_server_key
    _, unsigned_by = write_key_pair(tmp_path, "third")
    for given in (None, unsigned_by):  # the server checks with a key the repository was not signed with
        server = _server_with_key(tmp_path / f"home-{given is None}", unsigned_by)
        with pytest.raises(TritongenError) as err:  # the server's key, named as such and its address once
            server.signed_digests(repo, given)
        assert "the server's key" in err.value.problem and str(server.home) not in err.value.message
        assert err.value.problem.count("127.0.0.1:1") == 1


@pytest.mark.parametrize(
    ("address", "sent"),
    [
        ("127.0.0.1:1", True),
        ("localhost:1", True),
        ("0.0.0.0:1", True),
        ("[::ffff:127.0.0.1]:1", True),
        ("192.0.2.9:1", False),
        ("myhost:1/triton", False),
    ],
)
def test_the_admin_key_is_sent_only_where_the_connection_goes_to_loopback(tmp_path, address, sent):
    """The signing key is found by any address of this machine (holding files to it is the safe side), the admin
    key only for one that connects to loopback: another of the machine's addresses can be redirected (a
    container's published port), and the key is a secret."""
    _, public = write_key_pair(tmp_path)
    server = _server_with_key(tmp_path / "home", public, address)
    assert server.signing_key() is not None
    assert bool(server.headers("http")) is sent
    assert server.headers("grpc") == ({f"triton-grpc-protocol-{ADMIN_HEADER}": "sesame"} if sent else {})


def test_a_signature_path_that_is_no_regular_file_is_named_so_without_waiting(signed, tmp_path):
    import os

    from tritongen.signing import signed_digests

    repo, _, public = signed
    fifo = tmp_path / "signature.fifo"
    os.mkfifo(fifo)  # a reader that opened it blocking would wait for a writer forever
    with pytest.raises(TritongenError, match="not a regular file"):
        signed_digests(repo, public, fifo)
    with pytest.raises(TritongenError, match=f"public key file {fifo} cannot be read .*not a regular file"):
        signed_digests(repo, fifo)
    with pytest.raises(TritongenError, match="it is a folder"):
        signed_digests(repo, public, tmp_path)


def test_serving_unchecked_with_a_key_is_refused_at_the_call(signed):
    import tritongen

    repo, _, public = signed
    with pytest.raises(TritongenError, match="verify=False serves the repository unchecked"):
        tritongen.serve(repo, verify=False, public_key=public)


def test_a_rollout_with_the_admin_key_by_hand_says_when_no_signature_was_checked(signed, tmp_path):
    """--header reaches a server rollout cannot look into (another host): the result says nothing was held to a
    signature there, and how to make it so; with a key, what the files were held to."""
    from tritongen.deploy.rollout import RolloutSpec, _signature_words

    repo, _, public = signed
    nowhere = LocalServer("192.0.2.9:8001", None)
    by_hand = RolloutSpec(repo=repo, name=NAME, to_version=2, headers={"triton-admin": "k"})
    words = _signature_words(by_hand, nowhere, None) or ""
    assert "not checked" in words and "192.0.2.9:8001" in words and "--public-key" in words
    assert _signature_words(RolloutSpec(repo=repo, name=NAME, to_version=2), nowhere, None) is None
    keyed = RolloutSpec(repo=repo, name=NAME, to_version=2, public_key=public)
    assert f"under the key {public}" in (_signature_words(keyed, nowhere, nowhere.signed_digests(repo, public)) or "")
    local = _server_with_key(tmp_path / "h", public)
    # the words follow the key that decided, as found by the one lookup: not a second look at the server's folder
    held = local.signed_digests(repo, public)
    (local.home / SIGNING_KEY_NAME).unlink()
    assert "under the server's key" in (_signature_words(keyed, local, held) or "")


def test_a_server_without_model_control_is_named_before_the_repositorys_signature(signed, server_install, tmp_path):
    """The refusal whose fix restarts the server comes first: an unsigned repository, rolled out into a server that
    checks signatures but loads nothing (model control none), is told about the model control, not sent to sign
    first only to be refused again; nothing is printed as loading."""
    import tritongen

    repo, _, public = signed
    http, grpc, metrics = free_ports(3)
    with tritongen.serve(repo, public_key=public, http_port=http, grpc_port=grpc, metrics_port=metrics) as server:
        (repo / ".tritongen-signature.sig").unlink()
        said: list[str] = []
        with pytest.raises(TritongenError) as err:
            tritongen.rollout(repo, NAME, to_version=1, url=server.grpc_url, progress=said.append)
        assert "was not started with explicit model control" in err.value.problem, err.value.message
        assert "--model-control explicit" in err.value.fix and not said
