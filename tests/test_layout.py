"""The repository's shape (../shared/STYLE.md B.1; the brief's architecture
rules), checked on the source itself with `ast`:

- the root holds only the two CLIs, train.py and evaluate.py;
- imports flow one way, data/ and layers/ -> models/ -> attacks/ ->
  training/ -> CLIs (every package has a rank; an import must go to a lower
  rank or stay in its package), with no import cycle between modules;
- no `_private` name is imported from another package, private Keras API
  (`keras.src`, Keras's private methods and attributes) is used only by
  core/keras_internals.py, and no code reads another object's `_private`
  attribute;
- no function outside tests/ runs over 80 lines.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLIS = {"train.py", "evaluate.py"}
# The layering. core/ (registry, Keras internals) and recipes/ (configs
# only) import nothing of the project; scripts and benchmarks are clients
# like the CLIs.
RANKS = {
    "core": 0, "recipes": 0,
    "data": 1, "layers": 1,
    "models": 2,
    "attacks": 3, "checkpoints": 3,
    "training": 4, "evaluation": 4,
    "train": 5, "evaluate": 5, "benchmarks": 5, "scripts": 5,
}
KERAS_INTERNALS = "core/keras_internals.py"
MAX_FUNCTION_LINES = 80


def _sources() -> list[pathlib.Path]:
    return sorted(p for p in ROOT.rglob("*.py")
                  if p.relative_to(ROOT).parts[0] not in ("tests", ".git"))


def _module(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(name: str) -> str | None:
    """The project module `name` refers to, or None if not ours."""
    parts = name.split(".")
    while parts:
        base = ROOT.joinpath(*parts)
        if base.with_suffix(".py").is_file() or (base / "__init__.py"
                                                 ).is_file():
            return ".".join(parts)
        parts.pop()
    return None


def _imports(path: pathlib.Path):
    """Yields (line, absolute module, imported name or None) of every
    import in `path`, function-level ones included."""
    package = _module(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[:len(package) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for alias in node.names:
                yield node.lineno, base, alias.name


def _edges(path: pathlib.Path):
    """(line, imported project module, imported name) for `path`."""
    for line, module, name in _imports(path):
        target = _resolve(f"{module}.{name}" if name else module)
        if target is not None:
            yield line, target, name


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def test_root_holds_only_the_clis():
    assert {p.name for p in ROOT.glob("*.py")} == CLIS


def test_every_package_has_a_rank():
    tops = {p.relative_to(ROOT).parts[0].removesuffix(".py")
            for p in _sources()}
    assert tops <= set(RANKS), sorted(tops - set(RANKS))


def test_imports_flow_down_the_layers():
    bad = []
    for path in _sources():
        source = path.relative_to(ROOT).parts[0].removesuffix(".py")
        for line, target, _ in _edges(path):
            top = target.split(".")[0]
            if top != source and RANKS[top] >= RANKS[source]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports "
                           f"{target} ({source} rank {RANKS[source]} -> "
                           f"{top} rank {RANKS[top]})")
    assert not bad, "\n".join(bad)


def test_no_private_import_across_packages():
    bad = []
    for path in _sources():
        rel = path.relative_to(ROOT)
        source = rel.parts[0].removesuffix(".py")
        for line, module, name in _imports(path):
            parts = module.split(".") + ([name] if name else [])
            if module.startswith("keras.src") or (
                    parts[0] == "keras" and any(map(_private, parts))):
                if rel.as_posix() != KERAS_INTERNALS:
                    bad.append(f"{rel}:{line} private Keras API {module}")
                continue
            top = _resolve(module)
            if top is None or top.split(".")[0] == source:
                continue
            if any(map(_private, parts)):
                bad.append(f"{rel}:{line} imports {'.'.join(parts)}")
    assert not bad, "\n".join(bad)


def _keras_private_names() -> set[str]:
    import keras

    bases = (keras.Model, keras.layers.Layer, keras.losses.Loss,
             keras.metrics.Metric, keras.optimizers.SGD,
             keras.optimizers.schedules.LearningRateSchedule,
             keras.callbacks.BackupAndRestore,
             keras.callbacks.ModelCheckpoint)
    return {name for base in bases for name in dir(base) if _private(name)}


def test_no_private_attribute_of_another_object():
    """Outside core/keras_internals.py: no `obj._name` on anything but
    `self` / `cls`, no `super()._name`, and no use or override of a private
    method or attribute that Keras's own base classes define."""
    keras_private = _keras_private_names()
    bad = []
    for path in _sources():
        rel = path.relative_to(ROOT)
        if rel.as_posix() == KERAS_INTERNALS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and (
                    node.name in keras_private):
                bad.append(f"{rel}:{node.lineno} overrides Keras's "
                           f"{node.name}")
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                if node.attr in keras_private:
                    bad.append(f"{rel}:{node.lineno} uses Keras's "
                               f"{node.attr}")
            else:
                bad.append(f"{rel}:{node.lineno} {ast.unparse(node)}")
    assert not bad, "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or with a
    self-import (Tarjan's algorithm, iterative)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    out.append(sorted(component))
    return out


def test_no_import_cycles():
    graph = {_module(p): {t for _, t, _ in _edges(p)} - {_module(p)}
             for p in _sources()}
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("path", _sources(),
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_functions_are_short(path):
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long


# Where each backend's own library may be imported (issue 15): TensorFlow
# in its backend module, the tf.data / tfds input path, and the benchmark
# of TensorFlow-based peer libraries; JAX in its backend module and the
# JAX-only GPU benchmark. Everything else runs on `keras.ops`.
BACKEND_IMPORTS = {
    "tensorflow": {
        "core/backends/tensorflow.py",   # the TensorFlow backend module
        "data/_pipeline.py",             # tf.data input path
        "data/__init__.py",              # get_dataset's type (TYPE_CHECKING)
        "data/fashion_mnist.py",         # its tf.data builder and tfds
                                         # fallback, imported inside them
        "data/augment.py",               # tf.data augmentation
        "data/tfds_datasets.py",         # tensorflow-datasets input path
        "benchmarks/peers_tensorflow.py",  # cleverhans & co. (TF peers)
    },
    "jax": {
        "core/backends/jax.py",          # the JAX backend module
        "benchmarks/gpu_at_step.py",     # JAX-only GPU benchmark
    },
}


@pytest.mark.parametrize("library", sorted(BACKEND_IMPORTS))
def test_backend_libraries_are_imported_only_where_allowed(library):
    allowed = BACKEND_IMPORTS[library]
    bad = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        for line, module, name in _imports(path):
            full = f"{module}.{name}" if name and not module else module
            if full.split(".")[0] in (library, f"{library}_datasets") \
                    and rel not in allowed:
                bad.append(f"{rel}:{line} imports {full}")
    assert not bad, "\n".join(bad)
