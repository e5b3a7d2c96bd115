#!/usr/bin/python3
"""Writes the mixin's rendered files: render.py OUTDIR < render.jsonnet's output (JSON).

Each entry of the input is a path relative to OUTDIR and what goes there: {"json": value} is
written as JSON (2-space indent), {"yaml": value, "header": text} as the header followed by YAML.
In YAML, multi-line strings (rule expressions, the embedded dashboard) are literal blocks, and a
ConfigMap's data values that are not strings are written as their JSON, exactly as a "json"
entry would be, so that the dashboard in the ConfigMap equals the dashboard file byte for byte.
Called by render.sh; PyYAML is Debian's python3-yaml.
"""

import json
import sys
from pathlib import Path

import yaml

# Keys that go first, in this order, wherever they appear; the others follow in jsonnet's
# (alphabetical) order. Rules read as alert, expr, for, labels, annotations; objects as
# apiVersion, kind, metadata.
FIRST = ["apiVersion", "kind", "metadata", "name", "namespace", "alert", "record", "expr", "for",
         "labels", "annotations", "summary", "description", "runbook_url"]


def ordered(value):
    if isinstance(value, dict):
        keys = [k for k in FIRST if k in value] + [k for k in value if k not in FIRST]
        return {k: ordered(value[k]) for k in keys}
    if isinstance(value, list):
        return [ordered(v) for v in value]
    return value


def json_text(value):
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


WIDTH = 96


class Dumper(yaml.SafeDumper):
    pass


def represent_str(dumper, data):
    # Multi-line strings as literal blocks; long one-line strings (the annotations) folded at
    # the line width, as they would be written by hand.
    style = "|" if "\n" in data else ">" if len(data) > WIDTH and " " in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


Dumper.add_representer(str, represent_str)


def yaml_text(value):
    if isinstance(value, dict) and value.get("kind") == "ConfigMap":
        value = dict(value)
        value["data"] = {k: v if isinstance(v, str) else json_text(v)
                         for k, v in value.get("data", {}).items()}
    return yaml.dump(ordered(value), Dumper=Dumper, sort_keys=False, allow_unicode=True,
                     width=WIDTH, indent=2)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(sys.argv[1])
    for rel, entry in json.load(sys.stdin).items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if "json" in entry:
            text = json_text(entry["json"])
        else:
            text = entry.get("header", "") + yaml_text(entry["yaml"])
        path.write_text(text, encoding="utf-8")
        print(f"render: {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
