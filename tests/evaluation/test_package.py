"""The layout issue K asks for: `medvol.metrics` holds pure computations (it imports nothing of medvol but its
errors and itself), and no function of the evaluation package runs over 80 lines of code."""

from __future__ import annotations

import ast
from pathlib import Path

import medvol

PACKAGE = Path(medvol.__file__).parent
MAX_FUNCTION_LINES = 80


def code_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end of the function."""
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1:
        body = body[1:]
    return function.end_lineno - body[0].lineno + 1


def medvol_imports(tree: ast.AST) -> set[str]:
    """The medvol modules a module imports, at its top or inside functions."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name == "medvol" or name.startswith("medvol.")}


def test_metrics_modules_import_only_errors_and_other_metrics():
    outside = {
        path.name: sorted(name for name in medvol_imports(ast.parse(path.read_text()))
                          if name != "medvol.errors" and not name.startswith("medvol.metrics"))
        for path in sorted((PACKAGE / "metrics").glob("*.py"))
    }
    assert {name: modules for name, modules in outside.items() if modules} == {}


def test_no_function_of_the_evaluation_package_is_longer_than_80_lines_of_code():
    long = []
    for path in sorted((PACKAGE / "evaluation").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and code_lines(node) > MAX_FUNCTION_LINES:
                long.append(f"{path.name}:{node.lineno} {node.name} ({code_lines(node)} lines)")
    assert long == []
