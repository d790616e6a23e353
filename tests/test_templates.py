"""The generated Python-backend models never evaluate request content (issue 6, secure defaults).

Static checks over every model template: no eval/exec/compile, no unpickling, no dynamic imports fed by
request data. The only code loaded at run time is the user's own pre/post file named at build time
(custom_step.py), and it is loaded from the model's folder in initialize(), never from a request.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tritongen.templates import template_dir

MODELS = sorted((template_dir() / "python").glob("*.py"))
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
UNSAFE_LOADERS = {
    "pickle",
    "marshal",
    "dill",
    "cloudpickle",
    "torch",
    "yaml",
    "joblib",
}  # their load/loads can run code
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "cloudpickle", "subprocess"}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
            yield node, name, owner


def test_every_model_template_is_found():
    assert {p.name for p in MODELS} >= {
        "onnx_runner.py",
        "text_preprocess.py",
        "image_preprocess.py",
        "postprocess.py",
        "custom_step.py",
    }


@pytest.mark.parametrize("path", MODELS, ids=[p.name for p in MODELS])
def test_no_code_evaluation_or_unpickling(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not FORBIDDEN_MODULES & {n.split(".")[0] for n in names}, (
                f"{path.name}:{node.lineno} imports {names}"
            )
    for node, name, owner in _calls(tree):
        where = f"{path.name}:{node.lineno} calls {owner + '.' if owner else ''}{name}"
        assert name not in FORBIDDEN_CALLS, where
        assert not (owner in UNSAFE_LOADERS and name in {"load", "loads", "Unpickler", "unsafe_load"}), where
        if owner in {"np", "numpy"} and name == "load":  # only without pickles
            kw = {k.arg: k.value for k in node.keywords}
            assert isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is False, where


def test_user_code_is_loaded_only_in_initialize_from_the_model_folder():
    tree = ast.parse((template_dir() / "python" / "custom_step.py").read_text())
    loaders = [n for n, name, _ in _calls(tree) if name in {"spec_from_file_location", "exec_module"}]
    assert loaders, "custom_step.py no longer loads the user's file: update this test"
    methods = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    inside = {id(n) for n in ast.walk(methods["initialize"])}
    assert all(id(n) in inside for n in loaders), "user code is loaded outside initialize()"
