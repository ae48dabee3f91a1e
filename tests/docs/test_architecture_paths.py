"""docs/ARCHITECTURE.md names only files and folders that exist (issue 12, structure)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"[\w./]+\.py|[\w/]+/")


def tree_paths(markdown: str) -> list[str]:
    """Paths of the first fenced block (the folder tree): indentation gives the folder; a
    bare name after ``dir/name.py,`` on one line lives in the same folder."""
    block = markdown.split("```")[1]
    stack: list[tuple[int, str]] = []
    paths = []
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        if not line.strip() or indent > 20:     # blank, or a description's continuation
            continue
        names = NAME.findall(re.split(r"\s{2,}", line.strip())[0])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        base = stack[-1][1] if stack else ""
        prefix = ""
        for name in names:
            if "/" in name.rstrip("/"):
                prefix = name.rstrip("/").rsplit("/", 1)[0] + "/"
            elif not name.endswith("/"):
                name = prefix + name
            paths.append(base + name)
        if len(names) == 1 and names[0].endswith("/"):
            stack.append((indent, base + names[0]))
    return paths


def test_architecture_tree_names_existing_paths():
    paths = tree_paths((ROOT / "docs" / "ARCHITECTURE.md").read_text())
    assert "maniflow_rl/config/loading.py" in paths and len(paths) > 30
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert missing == []


def test_tree_parser_catches_a_missing_file():
    text = "```\npkg/\n  rl/\n    checkpoint.py     gone\n```"
    assert tree_paths(text) == ["pkg/", "pkg/rl/", "pkg/rl/checkpoint.py"]
