#!/usr/bin/env python3
"""Writes kubeconform's strict JSON schemas for every kind of a Kubernetes
OpenAPI v2 document, so the chart is checked offline against the exact
Kubernetes version we run (kubeconform would otherwise download them).

    kubeconform-schemas.py SWAGGER_JSON OUT_DIR

Each file is named as kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json`
template expects (deployment-apps-v1.json, pod-v1.json), holds the
definitions that kind reaches, and rejects unknown fields ("strict").
"""
import json
import os
import sys

# Types whose OpenAPI v2 form is a string but whose YAML form may be a number.
NUMBER_OR_STRING = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
    "io.k8s.apimachinery.pkg.api.resource.Quantity",
}


def strict(schema):
    """The schema, with unknown fields refused wherever fields are listed.
    Only schema positions are walked: a property may itself be named
    "properties" or "$ref"."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: strict(v) for k, v in out["properties"].items()}
        out.setdefault("additionalProperties", False)
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = strict(out["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [strict(v) for v in out[key]]
    return out


def refs(schema, found):
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            found.add(ref[len("#/definitions/"):])
        for v in schema.values():
            refs(v, found)
    elif isinstance(schema, list):
        for v in schema:
            refs(v, found)


def closure(definitions, name):
    seen, todo = set(), [name]
    while todo:
        n = todo.pop()
        if n in seen or n not in definitions:
            continue
        seen.add(n)
        found = set()
        refs(definitions[n], found)
        todo.extend(found - seen)
    return seen


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        definitions = json.load(f)["definitions"]
    for name in NUMBER_OR_STRING:
        if name in definitions:
            definitions[name] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
    os.makedirs(sys.argv[2], exist_ok=True)
    written = 0
    for name, schema in definitions.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            group, version, kind = gvk["group"], gvk["version"], gvk["kind"]
            suffix = f"-{group.split('.')[0].lower()}-{version.lower()}" if group else f"-{version.lower()}"
            reached = closure(definitions, name)
            document = {
                "$ref": f"#/definitions/{name}",
                "definitions": {n: strict(definitions[n]) for n in sorted(reached)},
            }
            with open(os.path.join(sys.argv[2], f"{kind.lower()}{suffix}.json"), "w") as out:
                json.dump(document, out)
            written += 1
    print(f"{written} schemas in {sys.argv[2]}", file=sys.stderr)


if __name__ == "__main__":
    main()
