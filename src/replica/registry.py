"""The claim registry: manifests on disk, validated, turned into grid points and file lists.

Everything here runs while Snakemake parses the workflow, so a bad manifest or config is
reported (file and field) before any job starts.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import itertools
import json
import math
import os
import py_compile
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CLAIMS_DIR = ROOT / "workflow" / "claims"
SCHEMA_DIR = ROOT / "workflow" / "schemas"
NOTEBOOK_DIR = ROOT / "notebooks"
SRC_DIR = ROOT / "src"
SCALES = ("smoke", "quick", "paper")
# libyaml's parser where it is built in (the pinned PyYAML wheels have it): ten times faster,
# and parsing 120 manifests was most of a DAG build.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> Any:
    return yaml.load(Path(path).read_text(), Loader=YAML_LOADER)


class InvalidInput(ValueError):
    """A config or manifest problem, with the file and field it is about."""

    def __init__(self, source: str | Path, field: str, problem: str):
        self.source, self.field, self.problem = str(source), field, problem
        super().__init__(f"{source}: field '{field}': {problem}")


@dataclass(frozen=True)
class Manifest:
    slug: str
    path: Path
    data: dict[str, Any]

    @property
    def title(self) -> str:
        return self.data["paper"]["title"]

    def scale(self, scale: str) -> dict[str, Any]:
        return self.data["scales"][scale]

    def points(self, scale: str) -> dict[str, dict[str, Any]]:
        return grid_points(self.scale(scale)["grid"])

    @property
    def module_path(self) -> Path:
        return SRC_DIR / "replica" / "claims" / f"{self.slug}.py"

    @property
    def notebook_path(self) -> Path:
        return NOTEBOOK_DIR / f"{self.slug}.ipynb"


@cache
def _schema(name: str):
    # Imported on first validation: a job whose manifest is already validated (cached by
    # content, below) never needs it, and it is a fifth of every job's start-up.
    from jsonschema import Draft202012Validator

    schema = read_yaml(SCHEMA_DIR / f"{name}.schema.yaml")
    return Draft202012Validator(schema)


def _field(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def validate(obj: Any, schema: str, source: str | Path) -> None:
    errors = sorted(_schema(schema).iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        if first.validator == "additionalProperties" and first.validator_value is False:
            known = sorted(first.schema.get("properties", {}))
            extra = sorted(set(first.instance) - set(known))
            field = ".".join([_field(first), extra[0]]) if first.absolute_path else extra[0]
            raise InvalidInput(source, field, f"unknown key; known keys: {', '.join(known)}")
        if first.validator == "required":
            missing = [k for k in first.validator_value if k not in first.instance][0]
            prefix = f"{_field(first)}." if first.absolute_path else ""
            raise InvalidInput(source, prefix + missing, "is required but missing")
        raise InvalidInput(source, _field(first), first.message)


def _check_finite(node: Any, source: Path, path: str = "") -> None:
    """YAML accepts .nan and .inf as numbers; no manifest value may be non-finite."""
    if isinstance(node, float) and not math.isfinite(node):
        raise InvalidInput(source, path or "(top level)", f"{node} is not a finite number")
    if isinstance(node, dict):
        for key, value in node.items():
            _check_finite(value, source, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_finite(value, source, f"{path}.{i}")


def point_id(point: dict[str, Any]) -> str:
    """A readable, file-safe name for a grid point, e.g. 'optimizer-adam__width-512'."""
    return "__".join(f"{key}-{value}" for key, value in point.items())


def grid_points(grid: dict[str, list]) -> dict[str, dict[str, Any]]:
    axes = list(grid)
    points = [dict(zip(axes, vals, strict=True)) for vals in itertools.product(*grid.values())]
    return {point_id(p): p for p in points}


def load_manifest(path: Path) -> Manifest:
    path = Path(path)
    data = _VALIDATED.get(path)
    if data is None:
        data = _validated(path)
        _VALIDATED.put(path, data)
    manifest = Manifest(slug=data["slug"], path=path, data=data)
    if not manifest.module_path.exists():
        raise InvalidInput(path, "slug", f"no claim module at {manifest.module_path}")
    return manifest


def _validated(path: Path) -> dict[str, Any]:
    """Parse one manifest and check everything about it; raises InvalidInput."""
    data = check_manifest_alone(path)
    notebook = Manifest(slug=data["slug"], path=path, data=data).notebook_path
    if not notebook.exists():
        raise InvalidInput(path, "slug", f"no notebook at {notebook}")
    check_notebook(notebook)
    return data


def check_manifest_alone(path: Path) -> dict[str, Any]:
    """Every check of a manifest that needs no other file (schema, numbers, slug, grid, gates):
    what a pre-registration commit, made before the module and notebook exist, can pass."""
    path = Path(path)
    try:
        data = read_yaml(path)
    except yaml.YAMLError as err:
        raise InvalidInput(path, "(yaml)", f"not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise InvalidInput(path, "(top level)", "a manifest must be a mapping")
    validate(data, "manifest", path)
    _check_finite(data, path)
    slug = data["slug"]
    if slug != path.stem:
        raise InvalidInput(path, "slug", f"'{slug}' must equal the file name '{path.stem}'")
    manifest = Manifest(slug=slug, path=path, data=data)
    for scale in SCALES:
        ids = manifest.points(scale)
        if len(ids) != math.prod(len(v) for v in manifest.scale(scale)["grid"].values()):
            raise InvalidInput(path, f"scales.{scale}.grid", "grid values repeat")
    check_gates(data, path)
    return data


class _ValidatedManifests:
    """Manifests that passed every check, keyed by content: a DAG build re-checks only what
    changed (schema validation and YAML construction of 120 manifests took seconds).

    The key hashes the manifest's bytes and file name, its notebook's bytes, the schemas and
    this module's source, so an edit to any of them re-validates. Only valid manifests are
    stored (an error is never cached), as JSON in Snakemake's working folder.
    """

    def __init__(self, path: Path):
        self.path, self.entries, self.loaded, self.dirty = path, {}, False, False

    def _key(self, manifest: Path) -> str | None:
        try:
            notebook = (NOTEBOOK_DIR / f"{manifest.stem}.ipynb").read_bytes()
            parts = [_checker_version(), manifest.name.encode(), manifest.read_bytes(), notebook]
        except OSError:
            return None
        return hashlib.sha256(b"\0".join(parts)).hexdigest()

    def get(self, manifest: Path) -> dict[str, Any] | None:
        if not self.loaded:
            self.loaded = True
            with contextlib.suppress(OSError, ValueError):
                self.entries = json.loads(self.path.read_text())
        key = self._key(manifest)
        return copy.deepcopy(self.entries.get(key)) if key else None

    def put(self, manifest: Path, data: dict[str, Any]) -> None:
        key = self._key(manifest)
        if key and json.loads(json.dumps(data)) == data:  # only what JSON keeps exactly
            self.entries[key] = copy.deepcopy(data)
            self.dirty = True

    def save(self, keep: set[str]) -> None:
        """Write the entries of the manifests just loaded (a read-only checkout skips it)."""
        if not self.dirty:
            return
        self.entries = {k: v for k, v in self.entries.items() if k in keep}
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(self.entries))
            os.replace(tmp, self.path)
        self.dirty = False


@cache
def _checker_version() -> bytes:
    files = [Path(__file__), *sorted(SCHEMA_DIR.glob("*.yaml"))]
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).digest()


_VALIDATED = _ValidatedManifests(ROOT / ".snakemake" / "replica-manifests.json")


def check_gates(data: dict[str, Any], path: Path) -> None:
    """What the schema cannot say: one primary check, unique names, ablations never primary."""
    rows = data["checks"] + data["controls"] + data.get("preconditions", [])
    names = [c["name"] for c in rows]
    if len(set(names)) != len(names):
        raise InvalidInput(path, "checks", "check, control and precondition names must be unique")
    primary = [c["name"] for c in data["checks"] if c.get("primary")]
    if len(primary) != 1:
        found = ", ".join(primary) or "none"
        raise InvalidInput(
            path, "checks", f"exactly one check must be 'primary: true' (found: {found})"
        )
    for kind in ("controls", "preconditions"):
        for i, row in enumerate(data.get(kind, [])):
            if row.get("primary"):
                raise InvalidInput(path, f"{kind}.{i}.primary", "only a check can be primary")


def check_notebook(path: Path) -> None:
    """papermill needs a first code cell tagged 'parameters' and the python3 kernel."""
    try:
        nb = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise InvalidInput(path, "(json)", f"not a valid notebook: {err}") from None
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    if not code or "parameters" not in code[0].get("metadata", {}).get("tags", []):
        raise InvalidInput(
            path, "cells.parameters", "the first code cell must be tagged 'parameters' (papermill)"
        )
    if nb.get("metadata", {}).get("kernelspec", {}).get("name") != "python3":
        raise InvalidInput(path, "metadata.kernelspec.name", "must be 'python3'")


def load_registry(claims_dir: Path = CLAIMS_DIR) -> dict[str, Manifest]:
    paths = sorted(Path(claims_dir).glob("*.yaml"))
    manifests = [load_manifest(p) for p in paths]
    if Path(claims_dir) == CLAIMS_DIR:
        _VALIDATED.save({k for k in map(_VALIDATED._key, paths) if k})
    return {m.slug: m for m in manifests}


def load_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate the workflow config and fill in defaults."""
    validate(config, "config", source)
    props = _schema("config").schema["properties"]
    return {key: config.get(key, spec["default"]) for key, spec in props.items()}


def selected_claims(config: dict[str, Any], registry: dict[str, Manifest]) -> list[str]:
    if config["claims"] == "all":
        return sorted(registry)
    for slug in config["claims"]:
        require_claim(slug, registry, source="config", field="claims")
    return list(config["claims"])


def require_claim(slug: str, registry: dict[str, Manifest], source="target", field="slug"):
    if slug not in registry:
        valid = ", ".join(sorted(registry))
        raise InvalidInput(source, field, f"unknown claim '{slug}'; valid claims: {valid}")
    return registry[slug]


# `from replica.x import a, (b, c)` and `import replica.x`, anywhere in a module: a text scan,
# not a parse, because the DAG build asks for every claim and parsing them all was slow. A
# mention in a docstring only adds an input (a harmless extra re-run trigger).
_IMPORT = re.compile(
    r"^\s*(?:from\s+(replica(?:\.\w+)*)\s+import\s+(\([^)]*\)|[^\n#]+)"
    r"|import\s+(replica(?:\.\w+)*(?:\s*,\s*[\w.]+)*))",
    re.M,
)


def imported_replica_modules(source: str) -> set[str]:
    """Dotted names that may be replica modules: `from m import n` gives m and m.n."""
    names: set[str] = set()
    for base, imported, plain in _IMPORT.findall(source):
        if base:
            names.add(base)
            for part in imported.strip("()").split(","):
                name = part.split()[0] if part.split() else ""  # drops `as alias`
                if name.isidentifier():
                    names.add(f"{base}.{name}")
        else:
            names.update(n.strip() for n in plain.split(",") if n.strip().startswith("replica"))
    return names


@cache
def module_sources(slug: str) -> tuple[Path, ...]:
    """The claim module and every replica module it imports, transitively.

    These are inputs of the claim's compute rules: editing one re-runs exactly the claims
    that use it, and editing the gallery code re-runs no training. Cached per process: the
    DAG asks once per job. A module that does not compile is reported once (file and line)
    and kept as an input: its claim's jobs then fail into an error card, and every other
    claim still builds.
    """
    seen: set[Path] = set()
    todo = [SRC_DIR / "replica" / "claims" / f"{slug}.py"]
    while todo:
        path = todo.pop()
        if path in seen or not path.exists():
            continue
        seen.add(path)
        source = _checked_source(path)
        for name in imported_replica_modules(source):
            parts = name.split(".")
            module = SRC_DIR.joinpath(*parts).with_suffix(".py")
            package = SRC_DIR.joinpath(*parts, "__init__.py")
            todo.extend(p for p in (module, package) if p.exists())
    return tuple(sorted(seen))


@cache
def sources_digest(slug: str, driver: tuple[str, ...] = ()) -> str:
    """sha256 over the claim's module sources and the step driver files (paths relative to the
    checkout, so two checkouts of the same code agree): one value per claim that stands for
    all of them. The compute rules take it as a param, not the files as inputs, so an edit
    still re-runs exactly the claims that use the file and changes the training cache key,
    while the DAG checks one value per job instead of a dozen files (~7000 at 120 claims)."""
    digest = hashlib.sha256()
    for path in sorted({*module_sources(slug), *(Path(p) for p in driver)}):
        name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
        digest.update(f"{name}\0".encode() + _file_digest(path) + b"\0")
    return digest.hexdigest()


@cache
def _file_digest(path: Path) -> bytes:
    """One hash per file and process: the shared modules are read once, not once a claim."""
    return hashlib.sha256(path.read_bytes()).digest() if path.exists() else b"missing"


@cache
def _checked_source(path: Path) -> str:
    """The module's text, after a syntax check that costs nothing when Python's bytecode cache
    already holds this version of the file (the jobs' imports keep it fresh)."""
    source = path.read_text()
    if not _bytecode_is_current(path):
        try:
            py_compile.compile(str(path), doraise=True)
        except py_compile.PyCompileError as err:
            lineno = getattr(err.exc_value, "lineno", "?")
            msg = getattr(err.exc_value, "msg", err.exc_type_name)
            print(
                f"replica: {path}:{lineno}: {err.exc_type_name}: {msg}; the claims that import "
                "it will end in an error card, the others build as usual",
                file=sys.stderr,
            )
        except OSError:
            pass  # a read-only checkout: no bytecode written, the check ran all the same
    return source


def _bytecode_is_current(path: Path) -> bool:
    """True when __pycache__ holds bytecode compiled from this file's current mtime and size
    (the header Python itself checks before it reuses a .pyc)."""
    try:
        header = Path(importlib.util.cache_from_source(str(path))).read_bytes()[:16]
        stat = path.stat()
    except OSError:
        return False
    flags = int.from_bytes(header[4:8], "little")
    return (
        len(header) == 16
        and header[:4] == importlib.util.MAGIC_NUMBER
        and flags == 0  # timestamp-based, not hash-based
        and int.from_bytes(header[8:12], "little") == int(stat.st_mtime) & 0xFFFFFFFF
        and int.from_bytes(header[12:16], "little") == stat.st_size & 0xFFFFFFFF
    )


def require_point(manifest: Manifest, scale: str, point: str) -> dict[str, Any]:
    points = manifest.points(scale)
    if point not in points:
        raise InvalidInput(
            manifest.path,
            f"scales.{scale}.grid",
            f"unknown grid point '{point}'; valid: {', '.join(points)}",
        )
    return points[point]
