"""The API convention of docs/architecture.md, checked on every public function of every
subpackage (as re-exported by its ``__init__``): a ``key`` parameter is first or
keyword-only; only ``jobs`` and ``data`` take an integer ``seed``; no public function
returns a dict (results are NamedTuples, ``eqx.Module``s, ``io.Table``s or ``train.History``)."""

import ast
import importlib
import inspect
import textwrap

import pytest

SUBPACKAGES = ("kinematics", "phasespace", "amplitudes", "pdf", "vertex", "stochad", "sim", "flows",
               "nn", "io", "analysis", "train", "data", "jobs", "sharding", "testing", "progress")
SEED_ALLOWED = ("jobs", "data")
# Programs in stochad's convention ``f(theta, key)``, the signature derivative_estimate calls.
STOCHAD_PROGRAMS = {"sim.objective", "sim.simulate"}


def _public_objects(kind):
    """``(qualname, subpackage, object)`` of the public difphys objects (``inspect.isfunction``
    or ``inspect.isclass``) re-exported by every subpackage."""
    for sub in SUBPACKAGES:
        module = importlib.import_module(f"difphys.{sub}")
        for name in sorted(vars(module)):
            obj = getattr(module, name)
            if not name.startswith("_") and kind(obj) and obj.__module__.startswith("difphys"):
                yield f"{sub}.{name}", sub, obj


def _public_functions():
    yield from _public_objects(inspect.isfunction)


FUNCTIONS = list(_public_functions())


def _returns_dict(fn) -> bool:
    ann = inspect.signature(fn).return_annotation
    if ann is not inspect.Signature.empty and "dict" in str(ann).lower():
        return True
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError):
        return False
    top = tree.body[0]

    def own_returns(node):
        """Return statements of ``node``, not of the functions defined inside it."""
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Return):
                yield child
            yield from own_returns(child)

    for node in own_returns(top):
        if node.value is not None:
            values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            for v in values:
                if isinstance(v, (ast.Dict, ast.DictComp)) or (
                        isinstance(v, ast.Call) and isinstance(v.func, ast.Name)
                        and v.func.id == "dict"):
                    return True
    return False


@pytest.mark.parametrize("qualname,sub,fn", FUNCTIONS, ids=[f[0] for f in FUNCTIONS])
def test_key_is_first_or_keyword_only(qualname, sub, fn):
    params = list(inspect.signature(fn).parameters.values())
    for i, p in enumerate(params):
        if p.name == "key" and qualname not in STOCHAD_PROGRAMS:
            assert i == 0 or p.kind is p.KEYWORD_ONLY, f"{qualname}: key is argument {i}"


@pytest.mark.parametrize("qualname,sub,fn", FUNCTIONS, ids=[f[0] for f in FUNCTIONS])
def test_only_jobs_and_data_take_an_integer_seed(qualname, sub, fn):
    names = inspect.signature(fn).parameters
    assert "seed" not in names or sub in SEED_ALLOWED, f"{qualname} takes seed; take a key"


def test_no_public_function_returns_a_dict():
    found = sorted(q for q, _, fn in FUNCTIONS if _returns_dict(fn))
    assert found == [], f"public functions returning dicts: {found}"


def test_the_checker_sees_dict_returns():
    def returns_literal():
        return {"a": 1}

    def returns_pair():
        return 1, dict(a=1)

    def returns_closure_dict():
        def inner():
            return {"a": 1}

        return inner

    assert _returns_dict(returns_literal) and _returns_dict(returns_pair)
    assert not _returns_dict(returns_closure_dict)


def _public_methods():
    for qualname, _, cls in _public_objects(inspect.isclass):
        for meth_name, meth in vars(cls).items():
            if meth_name.startswith("_") and meth_name != "__call__":
                continue
            fn = meth.__func__ if isinstance(meth, (classmethod, staticmethod)) else meth
            if inspect.isfunction(fn):
                yield f"{qualname}.{meth_name}", fn


# A result's JSON form (for run folders' .jsonl), not a result.
JSON_SERIALISERS = {"train.BinaryMetrics.record"}


def test_no_public_method_returns_a_dict():
    methods = list(_public_methods())
    assert len(methods) > 20  # the classes' methods are seen
    found = sorted(q for q, fn in methods if _returns_dict(fn) and q not in JSON_SERIALISERS)
    assert found == [], f"public methods returning dicts: {found}"
