"""Rebuild train.jsonl / validation.jsonl: English prose paragraphs from the docstrings of the Python standard
library's own source files (read with `ast`, nothing is imported). Run: python data/stdlib_docs/build_corpus.py"""

import ast
import hashlib
import json
import re
import sys
import sysconfig
from pathlib import Path

MAX_BYTES = 3_000_000  # keep the shipped corpus a few MB
CODE_HINTS = re.compile(r">>>|\.\.\. |::|[{}\[\]=<>_\\|`@#$]|\(\)|^\s*[-*+:]|^\s{4}")


def paragraphs(doc: str):
    """Prose paragraphs of a docstring: no doctests, code, tables, lists or field markup."""
    for block in re.split(r"\n\s*\n", doc):
        lines = [line.strip() for line in block.strip().splitlines()]
        if not lines or any(CODE_HINTS.search(line) for line in lines):
            continue
        text = " ".join(" ".join(lines).split())
        words = text.split()
        letters = sum(c.isalpha() or c.isspace() for c in text) / max(len(text), 1)
        if len(words) >= 12 and letters > 0.9 and text[0].isupper() and text.endswith("."):
            yield text


def main() -> None:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = Path(__file__).parent
    seen, rows = set(), {"train": [], "validation": []}
    size = 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if any(part in rel for part in ("test", "site-packages", "idlelib", "lib2to3", "turtledemo")):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        # Every 10th module (by a hash of its path) is held out for validation.
        split = "validation" if int(hashlib.md5(rel.encode()).hexdigest(), 16) % 10 == 0 else "train"
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                for text in paragraphs(doc or ""):
                    if text not in seen and size < MAX_BYTES:
                        seen.add(text)
                        size += len(text) + 12
                        rows[split].append({"text": text})
    for split, items in rows.items():
        with open(out / f"{split}.jsonl", "w") as f:
            for row in items:
                f.write(json.dumps(row) + "\n")
        print(f"{split}: {len(items)} paragraphs", file=sys.stderr)
    print(f"Python {sys.version.split()[0]}, {size / 1e6:.2f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
