#!/usr/bin/python3
"""Checks that every performance figure quoted in the deployment files comes from the
benchmark's latest run.

Usage: check_figures.py SOURCE_DIR [FILE...]

FILEs (default: deploy/systemd/portlens.service, deploy/systemd/portlens.default, README.md and
every deploy/kubernetes/**/*.yaml) are read for their comments (`# ...` lines, and `# ...` after a
YAML value). A README-like Markdown FILE is read whole, except its "Performance" section and
its subsections (where the figures are measured). Each figure found there:

  memory   "84 MiB", "147 B", "530 bytes", "12 KiB"      (MiB, MB, KiB, GiB, B, bytes, Mi)
  time     "56 ms", "3.4 ms", "250 us"                    (seconds are not read: the files
                                                           quote timeouts and periods in s)
  CPU      "9.7% of a core", "9.7% of one core"
  counts   "195,000 TIME_WAIT", "10,000 new connections per second", "1.4M events/s"

must equal, at the precision it is quoted with ("56 ms" matches 55.8 ms), a figure of the latest
run: the "after" column, or the figure's own name (e.g. "idle 23.5 MiB", "~195,000 TIME_WAIT"),
of the Performance table in bench/README.md ("Figures measured here") or README.md
("Performance"). The "before" and "aim" columns do not count: a figure from them is stale or
a wish. A handful of values are settings, not measurements (the ring buffer's default size,
the memory limit itself); SETTINGS lists them, each with what it is.

Prints every figure that is not from the latest run, with its file and line, and exits 1 if
there is any; prints what each figure matched with -v.
"""

import re
import sys
from pathlib import Path

# Values that the files may quote because they are configuration, not measurements:
# (value, unit) -> what it is. Units as canonical() returns them.
SETTINGS = {
    (8.0, "MiB"): "the ring buffer's default size (--ring-buffer-size 8MiB)",
    (64.0, "MiB"): "the event log's default rotation size (--event-log.max-size 64MiB)",
    (512.0, "MiB"): "the memory limit itself (MemoryMax=512M, limits.memory: 512Mi)",
    (4.0, "MiB"): "the event log writer's queue (exporters/event_log.hpp)",
}

MEMORY = {"B": 1, "bytes": 1, "KiB": 2**10, "MiB": 2**20, "Mi": 2**20, "MB": 2**20,
          "GiB": 2**30, "Gi": 2**30}
TIME = {"ms": 1e-3, "us": 1e-6, "µs": 1e-6}

NUMBER = r"(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)(k|M)?"
PATTERNS = [
    # memory and time: a number and its unit
    (re.compile(NUMBER + r"\s?(bytes|B|KiB|MiB|MB|Mi|GiB|Gi|ms|us|µs)\b"), None),
    # CPU ("100%" elsewhere, e.g. an accuracy, is not a performance figure)
    (re.compile(NUMBER + r"\s?%\s+of\s+(?:a|one)\s+(?:CPU\s+)?core"), "% of a core"),
    # counts of TIME_WAIT sockets
    (re.compile(NUMBER + r"\s+(?:TIME_WAIT|TW)\b"), "TIME_WAIT"),
    # rates
    (re.compile(NUMBER + r"\s+(?:new\s+)?(?:conn/s|connections/s|connections per second)"),
     "conn/s"),
    (re.compile(NUMBER + r"\s+events/s"), "events/s"),
]

problems = []
verbose = False


def canonical(unit):
    return {"bytes": "B", "Mi": "MiB", "MB": "MiB", "Gi": "GiB", "µs": "us"}.get(unit, unit)


def figures(text):
    """(value, decimals, unit, matched text) for every figure in TEXT."""
    out = []
    for pattern, fixed_unit in PATTERNS:
        for m in pattern.finditer(text):
            number, suffix = m.group(1), m.group(2)
            unit = fixed_unit or m.group(3)
            # "8MiB" in "--ring-buffer-size 8MiB" and "2-3" in ranges are fine; a number glued
            # to letters before it ("x86", "v6") is not a figure.
            if m.start() > 0 and (text[m.start() - 1].isalnum() or text[m.start() - 1] == "."):
                continue
            decimals = len(number.split(".")[1]) if "." in number else 0
            value = float(number.replace(",", ""))
            if suffix == "k":
                value *= 1e3
            elif suffix == "M":
                if unit in MEMORY or unit in TIME:  # "12M" is not a count
                    continue
                value *= 1e6
            out.append((value, decimals, canonical(unit), m.group(0)))
    return out


def split_row(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def latest_run(path, section):
    """Figures of the latest run in the Markdown tables of PATH under the heading SECTION."""
    text = path.read_text(encoding="utf-8")
    m = re.search(rf"^(#+) {re.escape(section)}\s*$", text, re.M)
    if not m:
        problems.append(f"{path}: no '{section}' section")
        return []
    level = len(m.group(1))
    end = re.search(rf"^#{{1,{level}}} ", text[m.end():], re.M)
    body = text[m.end(): m.end() + end.start()] if end else text[m.end():]
    out, header = [], None
    for line in body.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = split_row(line)
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set(line.replace("|", "").strip()) <= set("-: "):
            continue
        if "after" not in header:
            continue
        after = header.index("after")
        name = cells[0]
        for cell in (name, cells[after] if after < len(cells) else ""):
            for value, _, unit, quoted in figures(cell):
                out.append((value, unit, f"{path.name}: {name} = {cells[after]}"))
    if not out:
        problems.append(f"{path}: no table with an 'after' column under '{section}'")
    return out


def comment_lines(path):
    """(first line number, text) of each paragraph of PATH that is prose, not settings.
    Consecutive comment lines are joined, so that a figure wrapped over two lines ("10,000 new
    / connections per second") is read whole."""
    lines = path.read_text(encoding="utf-8").splitlines()
    prose = []  # (line number, text or None for a break)
    if path.suffix == ".md":
        # The Performance section, its subsections included, is where the figures come from.
        # Fenced code blocks hold example output, not quoted figures.
        perf_level, fenced = 0, False
        for n, line in enumerate(lines, 1):
            if line.startswith("```"):
                fenced = not fenced
                prose.append((n, None))
                continue
            if fenced:
                prose.append((n, None))
                continue
            heading = re.match(r"(#+) ", line)
            if heading:
                level = len(heading.group(1))
                if perf_level and level <= perf_level:
                    perf_level = 0
                if line.strip("# ").startswith("Performance"):
                    perf_level = level
            prose.append((n, None if perf_level or not line.strip() else line))
    else:
        for n, line in enumerate(lines, 1):
            stripped = line.strip()
            text = None
            if stripped.startswith("#"):
                text = stripped.lstrip("#").strip()
                # a commented-out setting ("#CPUQuota=50%") is an example value, not a quote
                if re.match(r"[A-Z][A-Za-z]+=\S", text) or not text:
                    text = None
            elif path.suffix in (".yaml", ".yml") and " #" in line:
                text = line.split(" #", 1)[1].strip()
            prose.append((n, text))
    start, paragraph = None, []
    for n, text in prose + [(0, None)]:
        if text is None:
            if paragraph:
                yield start, " ".join(paragraph)
            start, paragraph = None, []
        else:
            start = start or n
            paragraph.append(text)


def matches(value, decimals, unit, run):
    for t_value, t_unit, where in run:
        if unit in MEMORY and t_unit in MEMORY:
            t = t_value * MEMORY[t_unit] / MEMORY[unit]
        elif unit in TIME and t_unit in TIME:
            t = t_value * TIME[t_unit] / TIME[unit]
        elif unit == t_unit:
            t = t_value
        else:
            continue
        if round(t, decimals) == value:
            return where
    return None


def main():
    global verbose
    args = sys.argv[1:]
    if args and args[0] == "-v":
        verbose, args = True, args[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(args[0])
    files = [Path(f) if Path(f).is_absolute() else root / f for f in args[1:]]
    if not files:
        files = [root / "deploy/systemd/portlens.service", root / "deploy/systemd/portlens.default",
                 root / "README.md"]
        files += sorted((root / "deploy/kubernetes").rglob("*.yaml"))
    run = (latest_run(root / "bench/README.md", "Figures measured here")
           + latest_run(root / "README.md", "Performance"))

    count = 0
    for path in files:
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        for n, text in comment_lines(path):
            for value, decimals, unit, quoted in figures(text):
                count += 1
                setting = SETTINGS.get((value * MEMORY.get(unit, 1) / 2**20, "MiB")
                                       if unit in MEMORY else (value, unit))
                if setting:
                    if verbose:
                        print(f"{path.relative_to(root)}:{n}: {quoted!r}: a setting, {setting}")
                    continue
                where = matches(value, decimals, unit, run)
                if where:
                    if verbose:
                        print(f"{path.relative_to(root)}:{n}: {quoted!r} = {where}")
                else:
                    at = text.find(quoted)
                    context = text[max(0, at - 50): at + len(quoted) + 30].strip()
                    problems.append(f"{path.relative_to(root)}:{n}: {quoted!r} is not a figure of "
                                    "the latest benchmark run (bench/README.md, README.md "
                                    f"Performance, 'after' column): ...{context}...")
    if count == 0:
        problems.append("no figures found at all: the files or this script's patterns changed")
    for p in problems:
        print(f"check_figures: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"check_figures: ok: {count} figures in {len(files)} files, all from the latest run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
