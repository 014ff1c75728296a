"""docs/PROMISES.md names the test behind each promise: every one it names must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = re.compile(r"`(test_[a-z_0-9]+\.py)::(test_[A-Za-z_0-9]+)")


def test_every_test_named_in_the_promises_exists() -> None:
    references = set(REFERENCE.findall((ROOT / "docs" / "PROMISES.md").read_text()))
    assert len(references) > 50  # the table was read, not an empty match
    missing = []
    for file_name, test_name in sorted(references):
        path = ROOT / "tests" / file_name
        tree = ast.parse(path.read_text()) if path.is_file() else ast.Module(body=[], type_ignores=[])
        defined = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        if test_name not in defined:
            missing.append(f"{file_name}::{test_name}")
    assert not missing, f"docs/PROMISES.md names tests that do not exist: {missing}"
