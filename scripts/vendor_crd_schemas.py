"""Extract the OpenAPI v3 schema of each custom resource the Kubernetes bundle uses from its project's CRD.

Usage: python scripts/vendor_crd_schemas.py CRD.yaml [CRD.yaml ...]  (run from the repository root)
Writes tritongen/deploy/schemas/<group>_<kind>_<version>.json (.json.gz when over 100 kB),
descriptions stripped (they are documentation, not constraints) to keep the files small.
Sources and licences: tritongen/deploy/schemas/README.md.
"""

import gzip
import json
import sys
from pathlib import Path

import yaml

OUT = Path("tritongen/deploy/schemas")


def _strip(node):
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


for crd_path in sys.argv[1:]:
    crd = yaml.safe_load(Path(crd_path).read_text())
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    for version in crd["spec"]["versions"]:
        if not version.get("storage"):
            continue
        schema = _strip(version["schema"]["openAPIV3Schema"])
        text = json.dumps(schema, separators=(",", ":"), sort_keys=True) + "\n"
        target = OUT / f"{group}_{kind}_{version['name']}.json"
        if len(text) > 100_000:  # KServe's embeds whole pod specs: stored compressed (gzip -d to read it)
            target = target.with_suffix(".json.gz")
            target.write_bytes(gzip.compress(text.encode(), mtime=0))
        else:
            target.write_text(text)
        print(f"{target} ({target.stat().st_size} bytes)")
