"""The one reader of files someone hands us: a regular file only, one open, never more than a bound."""

import json
import os

import pytest

from tritongen.files import FileTooLargeError, json_file, json_from_bytes, read_problem, regular_bytes, size_text


def test_a_regular_file_is_read_whole_up_to_its_bound(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 100)
    assert regular_bytes(path, 100) == b"x" * 100
    with pytest.raises(FileTooLargeError) as caught:
        regular_bytes(path, 99)
    assert caught.value.max_bytes == 99 and read_problem(caught.value) == "cannot be read (it is over 99 bytes)"


def test_a_fifo_a_device_and_a_folder_are_refused_without_reading(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # a plain open() would block here until a writer came
    for path, why in ((fifo, "not a regular file"), ("/dev/zero", "not a regular file"), (tmp_path, "a folder")):
        with pytest.raises(OSError) as caught:
            regular_bytes(path, 1 << 20)
        assert why in read_problem(caught.value), (path, read_problem(caught.value))
    with pytest.raises(FileNotFoundError) as missing:
        regular_bytes(tmp_path / "none", 10)
    assert read_problem(missing.value) == "does not exist"


def test_a_link_is_followed_only_where_the_caller_allows_it(tmp_path):
    target = tmp_path / "t.json"
    target.write_text("{}")
    link = tmp_path / "l.json"
    link.symlink_to(target)
    assert json_file(link, 10) == {}
    with pytest.raises(OSError):
        json_file(link, 10, follow_links=False)


def test_json_a_crafted_file_can_break_the_parser_with_is_a_value_error():
    assert json_from_bytes(b'{"a": [1, 2]}') == {"a": [1, 2]}
    for raw in (b"[" * 100_000 + b"]" * 100_000, b"1" * 5000, b"{", b"\xff\xfe\x00{"):
        with pytest.raises(ValueError):
            json_from_bytes(raw)
    assert json.loads("[1]") == json_from_bytes("[1]")


def test_sizes_read_as_people_write_them():
    assert [size_text(n) for n in (16 << 20, 64 << 10, 1 << 30, 100, (1 << 20) + 1)] == [
        "16 MiB",
        "64 KiB",
        "1 GiB",
        "100 bytes",
        "1048577 bytes",
    ]


def test_the_readers_of_images_and_text_files_refuse_fifos_and_large_files(tmp_path, monkeypatch):
    from tritongen.errors import TritongenError
    from tritongen.infer import ensemble_inputs_from_files
    from tritongen.perf import inputs

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(TritongenError, match="not a regular file"):
        ensemble_inputs_from_files(images=(fifo,))
    with pytest.raises(TritongenError, match="not a regular file"):
        inputs.request_set_from_text(fifo, "TEXT", batched=True)
    lines = tmp_path / "lines.txt"
    lines.write_text("one\n\ntwo\n")
    assert len(inputs.request_set_from_text(lines, "TEXT", batched=True).requests) == 2
    monkeypatch.setattr(inputs, "MAX_TEXT_FILE_BYTES", 4)
    with pytest.raises(TritongenError, match="is over 4 bytes"):
        inputs.request_set_from_text(lines, "TEXT", batched=True)


def test_infer_refuses_an_image_the_served_pre_processing_step_would_refuse(tmp_path):
    """infer --image took up to 64 MiB while the served step takes 32: a 40 MiB image was sent, then refused."""
    from tritongen.errors import TritongenError
    from tritongen.hf import MAX_IMAGE_FILE_BYTES
    from tritongen.infer import ensemble_inputs_from_files

    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(MAX_IMAGE_FILE_BYTES + 1)  # sparse: no 32 MiB written
    with pytest.raises(TritongenError, match="is over 32 MiB"):
        ensemble_inputs_from_files(images=(big,))
    with open(big, "r+b") as f:
        f.truncate(MAX_IMAGE_FILE_BYTES)
    assert len(ensemble_inputs_from_files(images=(big,))["IMAGE"]) == 1


def test_every_reader_of_a_config_pbtxt_is_bounded(tmp_path):
    """config.pbtxt is read by one bounded reader (layout.config_text): validate, the deploy bundle's Python-model
    scan, serve's numpy check, tune's and engine's rewrites; a 5 MiB config is one clean error (or, where only a
    hint is looked for, skipped), not read whole."""
    from tritongen.deploy.python_deps import python_models
    from tritongen.errors import TritongenError
    from tritongen.layout import MAX_CONFIG_BYTES, config_text
    from tritongen.server.install import has_python_models

    model = tmp_path / "repo" / "m"
    model.mkdir(parents=True)
    config = model / "config.pbtxt"
    config.write_text('backend: "python"\n' + "#" * MAX_CONFIG_BYTES)
    for read in (lambda: config_text(config), lambda: python_models(tmp_path / "repo")):
        with pytest.raises(TritongenError, match="far more than a model configuration holds"):
            read()
    assert has_python_models(tmp_path / "repo") is False  # a hint only: the config is refused where it is checked
    config.write_text('backend: "python"\n')
    assert config_text(config) == 'backend: "python"\n' and python_models(tmp_path / "repo") == [model]
    assert has_python_models(tmp_path / "repo") is True


def test_replace_file_replaces_a_planted_link_and_never_writes_through_it(tmp_path):
    from tritongen.files import replace_file

    victim = tmp_path / "victim.html"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").symlink_to(victim)
    replace_file(out / "report.html", "<html>")
    assert victim.read_text() == "precious"
    assert not (out / "report.html").is_symlink() and (out / "report.html").read_text() == "<html>"
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]  # no temporary file left


def test_replace_file_leaves_the_permissions_a_plain_write_would(tmp_path):
    """It forced 0644: a file kept private (0600) became readable by everyone, and the umask was ignored."""
    import stat

    from tritongen.files import replace_file

    private = tmp_path / "private.npz"
    private.write_bytes(b"old")
    private.chmod(0o600)
    replace_file(private, b"new")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and private.read_bytes() == b"new"
    old_umask = os.umask(0o077)
    try:
        replace_file(tmp_path / "fresh.txt", "x")
        replace_file(tmp_path / "run.sh", "#!/bin/sh\n", mode=0o755)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "fresh.txt").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "run.sh").stat().st_mode) == 0o700


def _tree(root):
    for rel in ("a/b/c", "a/d", "e"):
        (root / rel).mkdir(parents=True)
    for rel in ("f.txt", "a/g.txt", "a/b/c/h.txt"):
        (root / rel).write_text("x")
    (root / "link").symlink_to(root / "a")  # listed among the folders, as os.walk does, never descended into


def test_walk_is_os_walk_without_recursion(tmp_path):
    from tritongen.files import walk

    _tree(tmp_path)

    def listing(walker):
        return sorted((os.path.relpath(d, tmp_path), sorted(ds), sorted(fs)) for d, ds, fs in walker)

    assert listing(walk(tmp_path)) == listing(os.walk(tmp_path))
    seen = []
    for folder, dirs, _ in walk(tmp_path):  # pruned in place, as os.walk's callers do
        seen.append(os.path.relpath(folder, tmp_path))
        dirs[:] = [d for d in dirs if d != "b"]
    assert sorted(seen) == [".", "a", "a/d", "e"]
    errors = []
    assert list(walk(tmp_path / "missing", onerror=errors.append)) == [] and isinstance(errors[0], OSError)


def test_walk_refuses_a_tree_deeper_than_its_bound_with_one_line(tmp_path):
    """1,100 nested empty folders (2.2 KB of path) in a model made validate, verify, sign and serve end in a
    RecursionError traceback (Python 3.11's os.walk recurses once per level)."""
    from tritongen.errors import TritongenError
    from tritongen.files import MAX_TREE_DEPTH, walk

    deep = tmp_path / "m"
    deep.joinpath(*["d"] * MAX_TREE_DEPTH).mkdir(parents=True)
    assert len(list(walk(deep))) == MAX_TREE_DEPTH + 1  # exactly the bound: walked
    with pytest.raises(TritongenError, match=f"holds folders nested more than {MAX_TREE_DEPTH} deep"):
        list(walk(deep, depth=1))  # a model folder, one below the repository the bound counts from
    with pytest.raises(TritongenError, match="nested more than"):
        list(walk(tmp_path))  # the same tree walked from the repository: refused the same
    deep.joinpath(*["d"] * (MAX_TREE_DEPTH + 1)).mkdir()
    with pytest.raises(TritongenError, match=f"holds folders nested more than {MAX_TREE_DEPTH} deep"):
        list(walk(deep))
