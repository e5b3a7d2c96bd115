#!/usr/bin/python3
"""Generates portlens's bash and zsh completion, and its man page's COMMANDS section, from the
built binary's own --help output, so that neither can drift from the CLI.

Usage: from_help.py {bash|zsh|h2m} PORTLENS OUT

  bash  the bash-completion script  (/usr/share/bash-completion/completions/portlens)
  zsh   the zsh completion function (/usr/share/zsh/vendor-completions/_portlens)
  h2m   a help2man --include file: one subsection per command with its options, read by
        cmake/ManPage.cmake when it makes portlens.8

It runs `PORTLENS --help`, `PORTLENS COMMAND --help` for each command listed under
"Subcommands:", and `PORTLENS explain` (the causes `explain` accepts). It reads CLI11's layout:
entries indented 2 spaces, descriptions at column 30 (or on the next lines when the entry is
longer), "NAME TYPE[:{a,b}][=default]" entries. Exits 1 with a message when the output does
not look like that (no commands, a command without options), rather than write an empty file.
"""

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

COLUMN = 30  # CLI11's default column width for help entries


@dataclass
class Entry:
    names: list          # ["-h", "--help"] for options; ["proto"] for positionals
    type_name: str       # "" for flags; "PATH", "TEXT", "ADDR", "S", ... otherwise
    choices: list        # from "{a,b,c}" in the entry, else []
    description: str
    spec: str            # the entry as printed (names, type, default)


@dataclass
class Command:
    name: str
    summary: str
    description: str = ""
    usage: str = ""
    positionals: list = field(default_factory=list)
    options: list = field(default_factory=list)
    extra: list = field(default_factory=list)  # explain's causes


def fail(message):
    print(f"from_help: {message}", file=sys.stderr)
    sys.exit(1)


def run(binary, *args):
    proc = subprocess.run([binary, *args], capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "COLUMNS": "80"})
    if proc.returncode != 0:
        fail(f"`{' '.join([binary, *args])}` exited {proc.returncode}: {proc.stderr.strip()}")
    # Control characters have no place in a man page or a completion: CLI11 prints an enum
    # mapping's values raw (--snapshot's "{auto->,bpf->,sock_diag->}" carries bytes 0, 1, 2).
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", proc.stdout)


def sections(text):
    """Splits help text into (preamble lines, {heading: [lines]}) at lines like 'Options:'."""
    preamble, out, current = [], {}, None
    for line in text.splitlines():
        m = re.fullmatch(r"([A-Z][A-Za-z ]*):", line)
        if m:
            current = m.group(1)
            out[current] = []
        elif current is None:
            preamble.append(line)
        else:
            out[current].append(line)
    return preamble, out


def entries(lines):
    """(spec, description) pairs from CLI11's two-column layout."""
    out = []
    for line in lines:
        if not line.strip():
            continue
        if line.startswith(" " * COLUMN) and out:  # a description's continuation line
            spec, desc = out[-1]
            out[-1] = (spec, (desc + "\n" + line.strip()).strip())
            continue
        if not line.startswith("  ") or line.startswith("   "):
            fail(f"unexpected help line: {line!r}")
        # CLI11 pads an entry to the column and starts the description there; a longer entry
        # fills the line and its description starts on the next one.
        if len(line) > COLUMN and line[COLUMN - 1] == " " and line[COLUMN] != " ":
            out.append((line[2:COLUMN].strip(), line[COLUMN:].strip()))
        else:
            out.append((line[2:].strip(), ""))
    return out


def parse_entry(spec, description, positional):
    if positional:
        name, _, rest = spec.partition(" ")
        names = [name]
    else:
        first, _, rest = spec.partition(" ")
        names = first.split(",")
        if not all(n.startswith("-") for n in names):
            fail(f"option entry without option names: {spec!r}")
    rest = rest.strip()
    type_name = re.match(r"[^\s:=]*", rest).group(0) if rest else ""
    choices = []
    m = re.search(r"\{([^}]*)\}", rest)
    if m:
        # "{debug,info}" or CLI11's mapping form "{auto-> ,bpf->,sock_diag->}"
        choices = [c.split("->")[0].strip() for c in m.group(1).split(",")]
        choices = [c for c in choices if c]
    m = re.search(r"\[([a-z]+(?:\|[a-z]+)+)\]", rest)
    if m and not choices:
        # an optional word before a positional's value: "[tcp|udp] ADDR:PORT"
        choices = m.group(1).split("|")
    return Entry(names, type_name, choices, description, spec)


def parse(binary):
    preamble, top = sections(run(binary, "--help"))
    if "Subcommands" not in top or "Options" not in top:
        fail("`portlens --help` has no Options: and Subcommands: sections")
    root = Command("portlens", "", "\n".join(l for l in preamble if not l.startswith("Usage:")))
    root.options = [parse_entry(s, d, False) for s, d in entries(top["Options"])]
    commands = []
    for name, summary in entries(top["Subcommands"]):
        cmd = Command(name, summary.split("\n")[0])
        pre, secs = sections(run(binary, name, "--help"))
        usage = [l for l in pre if l.startswith("Usage:")]
        cmd.usage = re.sub(r"^Usage: \S*portlens", "portlens", usage[0]) if usage else ""
        cmd.description = "\n".join(l for l in pre if not l.startswith("Usage:")).strip()
        cmd.positionals = [parse_entry(s, d, True) for s, d in entries(secs.get("Positionals", []))]
        cmd.options = [parse_entry(s, d, False) for s, d in entries(secs.get("Options", []))]
        if not cmd.options:
            fail(f"`portlens {name} --help` lists no options")
        commands.append(cmd)
    if not commands:
        fail("`portlens --help` lists no commands")
    # `explain` without a cause lists the causes, one per line: "  cause  what it means".
    for cmd in commands:
        if cmd.name == "explain" and cmd.positionals:
            causes = [re.match(r"  ([a-z_]+)\s+(.*)", l).groups()
                      for l in run(binary, "explain").splitlines() if re.match(r"  [a-z_]+\s", l)]
            cmd.positionals[0].choices = [name for name, _ in causes]
            cmd.extra = [Entry([name], "", [], desc, name) for name, desc in causes]
    return root, commands


# --- bash ----------------------------------------------------------------------------------

def sh_words(words):
    return " ".join(words)


def value_kind(entry):
    """How to complete an option's value: choices, files, netns names, or nothing."""
    if entry.choices:
        return "choices"
    if entry.type_name == "PATH":
        return "file"
    if entry.type_name == "NS":
        return "netns"
    return "none"


def bash(root, commands):
    out = [
        "# bash completion for portlens. Generated at build time by deploy/completion/from_help.py",
        "# from `portlens --help` and each command's --help: do not edit.",
        "",
        "# COMPREPLY from compgen ARGS... for the word being completed ($cur, the caller's)",
        "_portlens_reply() {",
        "  mapfile -t COMPREPLY < <(compgen \"$@\" -- \"$cur\")",
        "}",
        "",
        "# A network namespace: an ip netns name, pid:PID, or a path (/proc/PID/ns/net)",
        "_portlens_netns() {",
        "  local names",
        "  names=$(ls /run/netns 2>/dev/null)",
        "  mapfile -t COMPREPLY < <(compgen -W \"$names pid:\" -- \"$cur\"; compgen -f -- \"$cur\")",
        "}",
        "",
        "_portlens() {",
        "  local cur prev cmd i",
        "  COMPREPLY=()",
        "  cur=${COMP_WORDS[COMP_CWORD]}",
        "  prev=${COMP_WORDS[COMP_CWORD-1]}",
        "  cmd=",
        "  for ((i = 1; i < COMP_CWORD; i++)); do",
        "    case ${COMP_WORDS[i]} in",
        f"      {'|'.join(c.name for c in commands)}) cmd=${{COMP_WORDS[i]}}; break ;;",
        "    esac",
        "  done",
        "  if [[ -z $cmd ]]; then",
        "    if [[ $cur == -* ]]; then",
        f"      _portlens_reply -W '{sh_words(n for e in root.options for n in e.names)}'",
        "    else",
        f"      _portlens_reply -W '{sh_words(c.name for c in commands)}'",
        "    fi",
        "    return 0",
        "  fi",
        "  case $cmd in",
    ]
    for cmd in commands:
        out.append(f"    {cmd.name})")
        valued = [e for e in cmd.options if e.type_name]
        if valued:
            out.append("      case $prev in")
            for e in valued:
                kind = value_kind(e)
                pattern = "|".join(e.names)
                if kind == "choices":
                    action = f"_portlens_reply -W '{sh_words(e.choices)}'"
                elif kind == "file":
                    action = "_portlens_reply -f"
                elif kind == "netns":
                    action = "_portlens_netns"
                else:
                    action = ":"  # a free-form value (an address, a number)
                out.append(f"        {pattern}) {action}; return 0 ;;")
            out.append("      esac")
        flags = [n for e in cmd.options for n in e.names]
        out.append("      if [[ $cur == -* ]]; then")
        out.append(f"        _portlens_reply -W '{sh_words(flags)}'")
        if cmd.positionals and cmd.positionals[0].choices:
            # The first positional's choices (check's protocol, explain's causes).
            out.append("      else")
            out.append(f"        _portlens_reply -W '{sh_words(cmd.positionals[0].choices)}'")
        out.append("      fi")
        out.append("      ;;")
    out += [
        "  esac",
        "  return 0",
        "}",
        "complete -F _portlens portlens",
        "",
    ]
    return "\n".join(out)


# --- zsh -----------------------------------------------------------------------------------

def zsh_quote(text):
    """A single-quoted zsh word; brackets and colons escaped for _arguments' specs."""
    text = text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]").replace(":", "\\:")
    return text.replace("'", "'\\''")


def first_line(text):
    return text.split("\n")[0].strip()


def summary(text, limit=72):
    """The first sentence of a command's description, cut to LIMIT characters."""
    text = first_line(text)
    m = re.match(r"(.+?[.:;])(\s|$)", text)
    text = m.group(1).rstrip(".:;") if m else text
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def zsh_spec(e):
    desc = zsh_quote(first_line(e.description))
    if len(e.names) > 1:
        names = "{" + ",".join(e.names) + "}"
        excl = "'(" + " ".join(e.names) + ")'"
    else:
        names, excl = e.names[0], ""
    if not e.type_name:
        return f"{excl}{names}'[{desc}]'"
    kind = value_kind(e)
    if kind == "choices":
        action = "(" + " ".join(e.choices) + ")"
    elif kind == "file":
        action = "_files"
    elif kind == "netns":
        action = "_portlens_netns"
    else:
        action = " "
    value = zsh_quote(e.type_name.lower())
    return f"{excl}{names}'[{desc}]:{value}:{action}'"


def zsh(root, commands):
    out = [
        "#compdef portlens",
        "# zsh completion for portlens. Generated at build time by deploy/completion/from_help.py",
        "# from `portlens --help` and each command's --help: do not edit.",
        "",
        "_portlens_netns() {",
        "  local -a names",
        "  names=(/run/netns/*(N:t))",
        "  _alternative 'names:namespace name:compadd -a names' 'paths:namespace path:_files'",
        "}",
        "",
        "_portlens() {",
        "  local curcontext=$curcontext state line",
        "  local -a commands",
        "  commands=(",
    ]
    for cmd in commands:
        out.append(f"    '{cmd.name}:{zsh_quote(summary(cmd.summary))}'")
    out += [
        "  )",
        "  _arguments -C \\",
    ]
    for e in root.options:
        out.append(f"    {zsh_spec(e)} \\")
    out += [
        "    '1: :->command' \\",
        "    '*:: :->args' && return",
        "  case $state in",
        "    command) _describe -t commands 'portlens command' commands ;;",
        "    args)",
        "      case $line[1] in",
    ]
    for cmd in commands:
        out.append(f"        {cmd.name})")
        out.append("          _arguments \\")
        for e in cmd.options:
            out.append(f"            {zsh_spec(e)} \\")
        for i, p in enumerate(cmd.positionals, start=1):
            action = "(" + " ".join(p.choices) + ")" if p.choices else " "
            opt = ":" if "[" + p.names[0] + "]" in cmd.usage else ""
            out.append(f"            '{opt}{i}:{zsh_quote(p.names[0])}:{action}' \\")
        out[-1] = out[-1][: -len(" \\")]
        out.append("          ;;")
    out += [
        "      esac",
        "      ;;",
        "  esac",
        "}",
        "",
        "_portlens \"$@\"",
        "",
    ]
    return "\n".join(out)


# --- help2man include ----------------------------------------------------------------------

def roff(text):
    """Escapes text for roff: backslashes, minus signs, and control characters at line starts."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    # "\&" before a line starting with ".", "'" (roff requests) or "[" (help2man's sections)
    return "\n".join("\\&" + l if l[:1] in (".", "'", "[") else l for l in text.split("\n"))


def tp_items(items):
    out = []
    for e in items:
        out.append(".TP")
        out.append("\\fB" + roff(e.spec) + "\\fR")
        out.append(roff(e.description).replace("\n", "\n.br\n"))
    return out


def h2m(root, commands):
    # help2man makes NAME, DESCRIPTION (the top-level description) and the version from
    # `portlens --help` and `--version`; the rest is replaced: its own reading of CLI11's
    # "Subcommands:" list would run the commands' descriptions together.
    out = ["[SYNOPSIS]"]
    for cmd in commands:
        words = (cmd.usage or f"portlens {cmd.name}").split()
        out.append(f".B {words[0]} {words[1]}")
        if len(words) > 2:
            out.append(roff(" ".join(words[2:])))
        out.append(".br")
    out.append("")
    out.append("[=OPTIONS]")
    out.append("Before the command:")
    out += tp_items(root.options)
    out.append("")
    out.append("[COMMANDS]")
    for cmd in commands:
        out.append(f'.SS "{roff(cmd.usage or "portlens " + cmd.name)}"')
        out.append(roff(cmd.description).replace("\n", "\n.br\n"))
        for heading, items in (("Arguments", cmd.positionals), ("Options", cmd.options),
                               ("Causes (from `portlens explain`)", cmd.extra)):
            if items:
                out.append(f".PP\n{heading}:")
                out += tp_items(items)
    out += [
        "",
        "[FILES]",
        ".TP",
        ".I /etc/default/portlens",
        "The agent's flags for the service: PORTLENS_ARGS=\"...\".",
        ".TP",
        ".I /lib/systemd/system/portlens.service",
        "The systemd unit that runs \\fBportlens agent\\fR (not started on installation).",
        ".TP",
        ".I /run/portlens/api.sock",
        "The running agent's local API, which \\fBportlens why\\fR asks for recent failures.",
        ".TP",
        ".I /var/log/portlens/",
        "Where the service may write its \\-\\-event\\-log.",
        "",
        "[SEE ALSO]",
        ".BR systemctl (1),",
        ".BR ss (8),",
        ".BR bpftool (8).",
        ".PP",
        "The full documentation is in /usr/share/doc/portlens/README.md, and the alerts' runbook",
        "in /usr/share/doc/portlens/runbook.md.",
        "",
    ]
    return "\n".join(out)


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("bash", "zsh", "h2m"):
        print(__doc__, file=sys.stderr)
        return 2
    kind, binary, dest = sys.argv[1:]
    root, commands = parse(binary)
    text = {"bash": bash, "zsh": zsh, "h2m": h2m}[kind](root, commands)
    Path(dest).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
