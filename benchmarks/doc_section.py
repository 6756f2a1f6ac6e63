"""One section of docs/benchmarks.md per benchmark script, between its own ``<!-- name:start -->`` and
``<!-- name:end -->`` markers, so scripts never overwrite each other's results."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def read_section(name: str, doc: Path = DOC) -> str | None:
    """The text between ``name``'s markers in ``doc``, or None when the file or the section is absent."""
    start, end = markers(name)
    text = doc.read_text() if doc.exists() else ""
    if start not in text or end not in text:
        return None
    return text[text.index(start) + len(start) : text.index(end)]


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    """Put ``body`` between ``name``'s markers in ``doc``, replacing what was there; a section not yet
    in the file is appended (a missing file starts as ``# Benchmarks``)."""
    start, end = markers(name)
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    section = f"{start}\n{body.strip(chr(10))}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
