"""Citations of docs/reference.md resolve, and the old `SPEC` citations are gone.

Comments cite the reference page as `docs/reference.md §N`, optionally with `, step K` (a numbered step of that
section) or `, "Name"` (a `###` heading of that section). Every such citation must name a section, step or
heading that exists. The external SPEC.md is not part of the repository, so no `SPEC` citation may remain.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference.md"
SCANNED_DIRS = ("cosmos_predict2", "scripts", "examples", "benchmarks", "tests", "docs")
SELF = Path(__file__).resolve()

# A citation: "reference.md §N" followed by more "§M" in a list ("§7, §8 and §12"), then an optional
# ", step K" or ', "Name"' qualifying the last section.
CITATION = re.compile(r'reference\.md\s+((?:§\d+(?:,\s*|\s+and\s+)?)+)(?:step\s+(\d+)|"([^"]+)")?')
SECTION_NUMBER = re.compile(r"§(\d+)")
OLD_CITATION = re.compile(r"\bSPEC\b")  # case-sensitive: TORCH_SPEC, ASPECT_RATIOS, LoraSpec do not match


def source_files() -> list[Path]:
    files = sorted(ROOT.glob("*.md"))
    for d in SCANNED_DIRS:
        files += sorted(p for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".md") and p.is_file())
    return [p for p in files if ".venv" not in p.parts and p.resolve() not in (SELF, REFERENCE.resolve())]


def reference_sections() -> dict[int, str]:
    """Section number -> its text (up to the next `## ` heading)."""
    text = REFERENCE.read_text(encoding="utf-8")
    parts = re.split(r"^## (\d+)\. .*$", text, flags=re.M)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def citations() -> list[tuple[str, int, int | None, str | None]]:
    """(where, section, step or None, named part or None) for every citation in the scanned files."""
    found = []
    for path in source_files():
        text = path.read_text(encoding="utf-8")
        for m in CITATION.finditer(text):
            where = f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}"
            numbers = [int(n) for n in SECTION_NUMBER.findall(m.group(1))]
            for n in numbers[:-1]:
                found.append((where, n, None, None))
            step = int(m.group(2)) if m.group(2) else None
            found.append((where, numbers[-1], step, m.group(3)))
    return found


def test_reference_sections_are_numbered_in_order():
    numbers = list(reference_sections())
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    assert len(numbers) >= 12


def test_every_citation_resolves():
    sections = reference_sections()
    problems = []
    for where, n, step, name in citations():
        if n not in sections:
            problems.append(f"{where}: §{n} has no '## {n}.' heading in docs/reference.md")
            continue
        body = sections[n]
        if step is not None and not re.search(rf"^{step}\. ", body, flags=re.M):
            problems.append(f"{where}: §{n} has no step {step}")
        if name is not None and not re.search(rf"^### {re.escape(name)}\s*$", body, flags=re.M):
            problems.append(f'{where}: §{n} has no "### {name}" heading')
    assert not problems, "\n".join(problems)


def test_no_spec_citations_remain():
    """Passes only once the SPEC -> docs/reference.md rewrite has been run over the repository."""
    left = []
    for path in source_files():
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if OLD_CITATION.search(line):
                left.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not left, "SPEC citations left (cite docs/reference.md §N instead):\n" + "\n".join(left)
