"""Functions a reader can hold in their head: none in dhs/ over MAX_LINES lines (the exceptions
listed with why), and the training loop, ``dhs.finder.training.train``, at most TRAIN_MAX_LINES."""

from __future__ import annotations

import ast

from tests.conftest import REPO

MAX_LINES = 120
TRAIN_MAX_LINES = 60
EXCEPTIONS: dict[str, str] = {}   # "dhs/x/y.py:function" -> why it may be longer


def lengths() -> dict[str, int]:
    out = {}
    for path in sorted((REPO / "dhs").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[f"{rel}:{node.name}"] = node.end_lineno - node.lineno + 1
    return out


def test_no_function_in_dhs_is_longer_than_the_limit():
    long = {k: n for k, n in lengths().items() if n > MAX_LINES and k not in EXCEPTIONS}
    assert not long, f"functions over {MAX_LINES} lines (split them, or list them in EXCEPTIONS with why): {long}"
    assert all(k in lengths() for k in EXCEPTIONS), "an exception names a function that no longer exists"


def test_the_training_loop_fits_on_a_screen():
    n = lengths()["dhs/finder/training.py:train"]
    assert n <= TRAIN_MAX_LINES, f"dhs.finder.training.train is {n} lines; at most {TRAIN_MAX_LINES}"
