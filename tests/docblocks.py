"""Code blocks of reST files, extracted literally, for the tests that run
them (test_docs.py, test_deploy.py).
"""

from __future__ import annotations

import re
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_DIRECTIVE = re.compile(r"^(\s*)\.\. (?:code-block|code|sourcecode)::\s*(\S*)\s*$")


class Block(t.NamedTuple):
    path: Path
    line: int  # 1-based line of the first line of code
    language: str  # "literal" for a paragraph ending in "::"
    source: str


def code_blocks(path: Path) -> list[Block]:
    """Every ``.. code-block::`` and ``::`` literal block of ``path``, dedented."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        line = lines[i]
        match = _DIRECTIVE.match(line)
        if match:
            indent, language = len(match.group(1)), match.group(2) or "literal"
        elif line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
            indent, language = len(line) - len(line.lstrip()), "literal"
        else:
            i += 1
            continue
        i += 1
        while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith(":")):
            i += 1  # blank lines and directive options
        body: list[str] = []
        start = i
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        if body:
            cut = min(len(x) - len(x.lstrip()) for x in body if x.strip())
            source = "\n".join(x[cut:] for x in body) + "\n"
            blocks.append(Block(path, start + 1, language, source))
    return blocks


def doc_blocks(name: str, language: str | None = None) -> list[Block]:
    """The blocks of ``docs/<name>.rst``, optionally of one language."""
    blocks = code_blocks(ROOT / "docs" / f"{name}.rst")
    return [b for b in blocks if language is None or b.language == language]
