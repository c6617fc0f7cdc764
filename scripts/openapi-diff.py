#!/usr/bin/env python3
"""Compare two OpenAPI documents route by route (paths, operations, parameters, status codes,
media types, security) and schema by schema (properties, required): what one has and the
other lacks. Usage: openapi-diff.py OLD.json NEW.json"""
import json
import sys


def resolve(doc, s, depth=0):
    """A schema with $ref and allOf merged into {properties, required}."""
    if depth > 10 or not isinstance(s, dict):
        return {}
    if "$ref" in s:
        return resolve(doc, doc["components"]["schemas"][s["$ref"].split("/")[-1]], depth + 1)
    out = {"properties": dict(s.get("properties", {})), "required": set(s.get("required", []))}
    for part in s.get("allOf", []) + s.get("oneOf", []):
        r = resolve(doc, part, depth + 1)
        out["properties"].update(r.get("properties", {}))
        out["required"] |= r.get("required", set())
    if s.get("type") == "array" or "items" in s:
        out["items"] = resolve(doc, s.get("items", {}), depth + 1)
    return out


def shape(doc, s, prefix, acc, depth=0):
    """Flatten a schema to {"a.b[]": required?} for comparison."""
    if depth > 6:
        return
    r = resolve(doc, s)
    for name, sub in r.get("properties", {}).items():
        key = f"{prefix}.{name}"
        acc[key] = name in r["required"]
        shape(doc, sub, key, acc, depth + 1)
    if "items" in r:
        shape(doc, s.get("items") or {"$ref": s.get("$ref")} if "$ref" not in s else {}, prefix + "[]", acc, depth + 1)
        for name, sub in r["items"].get("properties", {}).items():
            key = f"{prefix}[].{name}"
            acc[key] = name in r["items"]["required"]
            shape(doc, sub, key, acc, depth + 1)


def ops(doc):
    out = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            out[(method.upper(), path)] = op
    return out


def main(old_path, new_path):
    old, new = json.load(open(old_path)), json.load(open(new_path))
    diffs = 0

    def report(msg):
        nonlocal diffs
        diffs += 1
        print(msg)

    fields = {}

    def field(where, msg):
        fields.setdefault(msg, []).append(where)

    o, n = ops(old), ops(new)
    for k in sorted(set(o) - set(n)):
        report(f"route only in old: {k}")
    for k in sorted(set(n) - set(o)):
        report(f"route only in new: {k}")
    for k in sorted(set(o) & set(n)):
        a, b = o[k], n[k]
        where = f"{k[0]} {k[1]}"
        for f in ("operationId", "summary", "tags"):
            if a.get(f) != b.get(f):
                report(f"{where}: {f} {a.get(f)!r} -> {b.get(f)!r}")
        if (a.get("security") == []) != (b.get("security") == []):
            report(f"{where}: security {a.get('security')!r} -> {b.get('security')!r}")
        pa = {(p["name"], p["in"]): p for p in a.get("parameters", [])}
        pb = {(p["name"], p["in"]): p for p in b.get("parameters", [])}
        for p in sorted(set(pa) ^ set(pb)):
            report(f"{where}: parameter {p} only in {'old' if p in pa else 'new'}")
        for p in sorted(set(pa) & set(pb)):
            x, y = pa[p], pb[p]
            if bool(x.get("required")) != bool(y.get("required")):
                report(f"{where}: parameter {p} required {x.get('required')} -> {y.get('required')}")
            sx, sy = x.get("schema", {}), y.get("schema", {})
            for f in ("type", "enum", "minimum", "maximum", "default", "format", "pattern"):
                vx, vy = sx.get(f), sy.get(f)
                if "$ref" in sy and f in ("type", "enum"):
                    vy = new["components"]["schemas"][sy["$ref"].split("/")[-1]].get(f)
                if vx != vy:
                    report(f"{where}: parameter {p} schema.{f} {vx!r} -> {vy!r}")
            if (x.get("description") or "") != (y.get("description") or ""):
                report(f"{where}: parameter {p} description {x.get('description')!r} -> {y.get('description')!r}")
        ra, rb = a.get("responses", {}), b.get("responses", {})
        for c in sorted(set(ra) ^ set(rb)):
            report(f"{where}: status {c} only in {'old' if c in ra else 'new'}")
        for c in sorted(set(ra) & set(rb)):
            if ra[c].get("description") != rb[c].get("description"):
                report(f"{where}: {c} description {ra[c].get('description')!r} -> {rb[c].get('description')!r}")
            ca, cb = ra[c].get("content", {}), rb[c].get("content", {})
            if set(ca) != set(cb):
                report(f"{where}: {c} media types {sorted(ca)} -> {sorted(cb)}")
            for mt in set(ca) & set(cb):
                fa, fb = {}, {}
                shape(old, ca[mt].get("schema", {}), "", fa)
                shape(new, cb[mt].get("schema", {}), "", fb)
                for key in sorted(set(fa) | set(fb)):
                    if key not in fb:
                        field(f"{where} {c}", f"response field {key} only in old")
                    elif key not in fa:
                        field(f"{where} {c}", f"response field {key} only in new (required={fb[key]})")
                    elif fa[key] != fb[key]:
                        field(f"{where} {c}", f"response field {key} required {fa[key]} -> {fb[key]}")
        qa, qb = a.get("requestBody"), b.get("requestBody")
        if (qa is None) != (qb is None):
            report(f"{where}: requestBody {'removed' if qb is None else 'added'}")
        elif qa:
            if set(qa.get("content", {})) != set(qb.get("content", {})):
                report(f"{where}: request media types {sorted(qa['content'])} -> {sorted(qb['content'])}")
            if bool(qa.get("required")) != bool(qb.get("required")):
                report(f"{where}: requestBody required {qa.get('required')} -> {qb.get('required')}")
            for mt in set(qa.get("content", {})) & set(qb.get("content", {})):
                fa, fb = {}, {}
                shape(old, qa["content"][mt].get("schema", {}), "", fa)
                shape(new, qb["content"][mt].get("schema", {}), "", fb)
                for key in sorted(set(fa) | set(fb)):
                    if key not in fb or key not in fa or fa[key] != fb[key]:
                        report(f"{where}: request {mt} field {key}: old={fa.get(key)} new={fb.get(key)}")
    for msg, where in sorted(fields.items()):
        report(f"{msg}: {len(where)} response(s), e.g. {where[0]}")
    print(f"{diffs} difference(s)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
