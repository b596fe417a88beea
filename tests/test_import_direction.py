"""The package's layering (../shared/DESIGN.md, docs/architecture.md): dependencies point one way.

Every `import vidssl.x` / `from vidssl.x import ...` in `src/vidssl`, at module level or inside
a function (a lazy import is still a dependency), is checked against the rule of the importing
layer. The layer of a module is its first package below `vidssl` (`vidssl.data.video` -> data).
"""

from __future__ import annotations

import ast
from pathlib import Path

import vidssl

# layer -> layers it must never import
FORBIDDEN = {
    "errors": {"*"},
    "registry": {"*"},
    "io": {"*"},
    "config": {"data", "models", "ops", "methods", "engine", "eval", "viz", "cli", "hub"},
    "data": {"models", "ops", "methods", "engine", "eval", "viz", "cli", "hub"},
    "models": {"data", "methods", "engine", "eval", "viz", "cli", "hub"},
    "ops": {"methods", "engine", "eval", "viz", "cli", "hub"},
    "methods": {"engine", "eval", "viz", "cli", "hub"},
    "engine": {"eval", "viz", "cli", "hub"},
    "eval": {"engine", "methods", "viz", "cli"},
    "hub": {"methods", "eval", "viz", "cli"},
    "viz": {"cli"},
    "wtours": {"methods", "engine", "cli"},  # dataset tooling: data, models, eval features, viz
    "secat": {"methods", "viz", "cli"},  # few-shot VLM adaptation: data, models, eval, engine, hub
}
ALWAYS_ALLOWED = {"errors", "registry", "io"}  # the leaves every layer may use


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "vidssl"


def imports_of(path: Path, module: str) -> set[str]:
    """The vidssl modules `path` imports (absolute and relative)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vidssl"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("vidssl"):
                found.add(name)
    return found


def violations(root: Path) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        module = ".".join(("vidssl", *path.relative_to(root).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        own = layer(module)
        rule = FORBIDDEN.get(own, set())
        for target in sorted(imports_of(path, module)):
            other = layer(target)
            if other == own or other in ALWAYS_ALLOWED or other == "vidssl":
                continue
            if "*" in rule or other in rule:
                bad.append(f"{module} ({own}) imports {target} ({other})")
    return bad


def test_lower_layers_never_import_higher_ones() -> None:
    root = Path(vidssl.__file__).parent
    assert not violations(root), "\n".join(violations(root))


def test_every_layer_has_a_rule() -> None:
    root = Path(vidssl.__file__).parent
    layers = {p.name.removesuffix(".py") for p in root.iterdir() if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    unruled = layers - set(FORBIDDEN) - {"cli", "__init__", "__main__", "configs"}
    assert not unruled, f"add a rule for {sorted(unruled)} to FORBIDDEN"


def test_the_walker_sees_lazy_and_relative_imports(tmp_path) -> None:
    pkg = tmp_path / "methods"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("def draw():\n    from vidssl.viz.tracks import x\nfrom ..engine import trainer\n")
    assert violations(tmp_path) == [
        "vidssl.methods.bad (methods) imports vidssl.engine (engine)",
        "vidssl.methods.bad (methods) imports vidssl.viz.tracks (viz)",
    ]
