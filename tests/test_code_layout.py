"""Code tests: imports go one way, and the code passes the linters CI would run."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {
    "schemas",
    "core",
    "ingest",
    "models",
    "streams",
    "training",
    "serving",
    "rollout",
    "streamrec",
}
# package -> packages of ours it may import. streams/training/serving never import each
# other: they meet only through the contracts in schemas (and the shared clients in core).
ALLOWED = {
    "schemas": {"schemas"},
    "core": {"schemas", "core"},
    "ingest": {"schemas", "core", "ingest"},
    "models": {"schemas", "core", "models"},
    "streams": {"schemas", "core", "streams"},
    "training": {"schemas", "core", "ingest", "models", "training"},
    "serving": {"schemas", "core", "models", "serving"},
    # The rollout controller and simulator talk to serving and streams only over HTTP,
    # Kafka and the Redis key layout of schemas.
    "rollout": {"schemas", "core", "models", "ingest", "rollout"},
    "streamrec": OURS,
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_go_one_way(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for imported in _imports(path) - ALLOWED[package]:
            bad.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not bad, "\n".join(bad)


# schemas/ holds contracts: no clock, randomness, environment or settings. A setting read by
# name (``settings.__getattribute__("rollout_alpha")``) is a dependency on core.config the
# import check above cannot see, so the names are checked too.
SCHEMA_MODULES = {"uuid", "random", "os", "time", "secrets"}
SCHEMA_ATTRS = {"__getattribute__", "now", "utcnow", "today", "getenv", "environ"}


def test_schemas_hold_contracts_only():
    bad = []
    for path in sorted((ROOT / "schemas").rglob("*.py")):
        where = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                mods = {n.split(".")[0] for n in [*names, getattr(node, "module", None) or ""]}
                bad += [f"{where}:{node.lineno} imports {m}" for m in mods & SCHEMA_MODULES]
            elif isinstance(node, ast.Attribute) and node.attr in SCHEMA_ATTRS:
                bad.append(f"{where}:{node.lineno} uses .{node.attr}")
            elif isinstance(node, ast.Name | ast.arg):
                name = node.id if isinstance(node, ast.Name) else node.arg
                if "settings" in name.lower():
                    bad.append(f"{where}:{node.lineno} reads settings ({name})")
    assert not bad, "\n".join(bad)


def test_tests_share_helpers_through_support_only():
    """Helpers live in tests/support/, which holds no tests; test modules never import each
    other (a helper hidden in a test module is found only by reading every test)."""
    tests = ROOT / "tests"
    offenders = []
    for path in sorted(tests.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            offenders += [
                f"{path.relative_to(ROOT)} imports {m}"
                for m in modules
                if m.startswith("tests.") and not m.startswith("tests.support")
            ]
    for path in sorted((tests / "support").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        offenders += [
            f"{path.relative_to(ROOT)} defines {n.name}"
            for n in tree.body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test_")
        ]
    assert not offenders, offenders


def test_modules_stay_small():
    big = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for pkg in ALLOWED
        for p in (ROOT / pkg).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    ]
    assert not big, big


@pytest.mark.skipif(
    shutil.which("ruff", path=str(Path(sys.executable).parent)) is None,
    reason="ruff is installed by `make install`",
)
def test_ruff_lint_and_format_are_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    lint = subprocess.run([ruff, "check", "--quiet", str(ROOT)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = subprocess.run(
        [ruff, "format", "--check", "--quiet", str(ROOT)], capture_output=True, text=True
    )
    assert fmt.returncode == 0, "run `make format`:\n" + fmt.stdout
