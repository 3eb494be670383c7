"""Line counts of the largest modules and functions, at two git revisions side by side.

    python -m bench.code_size [BEFORE [AFTER]]   (defaults: the commit before issue 17's
    first change, and HEAD)

Reads the committed sources with ``git show`` (the working tree is not looked at), so a
before/after table can be made at any time. A function's length is its ``def`` line to its
last line, docstring included.
"""

from __future__ import annotations

import ast
import subprocess
import sys

#: The commit before the first change made for issue 17 (the package-cycle work).
BEFORE = "582f51c^"
TOPS = ("levibot", "sidecars")


def _git(*args: str) -> str:
    return subprocess.run(("git", *args), check=True, capture_output=True, text=True).stdout


def sizes(rev: str) -> tuple[dict[str, int], dict[str, int]]:
    """Return (module → lines, qualified function → lines) of the Python sources at ``rev``."""
    modules: dict[str, int] = {}
    functions: dict[str, int] = {}
    for path in _git("ls-tree", "-r", "--name-only", rev, *TOPS).split():
        if not path.endswith(".py"):
            continue
        text = _git("show", f"{rev}:{path}")
        modules[path] = text.count("\n")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions[f"{path}:{node.name}"] = node.end_lineno - node.lineno + 1  # type: ignore[operator]
    return modules, functions


def main(argv: list[str]) -> int:
    before = argv[0] if argv else BEFORE
    after = argv[1] if len(argv) > 1 else "HEAD"
    (mb, fb), (ma, fa) = sizes(before), sizes(after)
    for title, b, a in (("module", mb, ma), ("function", fb, fa)):
        print(f"\n{'largest ' + title + 's':<60} {before:>10} {after:>10}")
        top = sorted(set(b) | set(a), key=lambda k: -max(b.get(k, 0), a.get(k, 0)))[:15]
        for key in top:
            print(f"{key:<60} {b.get(key, '-'):>10} {a.get(key, '-'):>10}")
        n = 400 if title == "module" else 60
        print(
            f"{title}s over {n} lines: {sum(v > n for v in b.values())} before, "
            f"{sum(v > n for v in a.values())} after; total lines "
            f"{sum(b.values())} before, {sum(a.values())} after"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
