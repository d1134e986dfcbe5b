#!/usr/bin/env python3
"""Checks STYLE §1: the domain core does no I/O and never imports the edge.

Core code may not name tokio, tonic, sled, std::fs, std::net, std::process,
std::thread, read the wall clock (SystemTime::now, Instant::now, clock::now),
or use the edge modules (crate::store, api, tls, config, server, cli, files, net,
agent, attest, clock; `super::` from a core file that lives inside an edge module).

The whole file is read. Only test code is exempt: files named tests.rs or
under a tests/ directory, and the one item that follows each #[cfg(test)]
(a `mod x;` line, or a block up to its matching closing brace). Grouped
imports (`use std::{fs, io}`) are expanded before they are checked.

Usage: check-layers.py [--self-test] [ROOT]
"""

import os
import re
import sys
import tempfile

CORE = [
    "src/id",
    "src/keyring",
    "src/authority",
    "src/registry",
    "src/policy",
    "src/audit",
    "src/secret.rs",
    "src/secrets",
    "src/oidc",
    "src/jit",
    "src/unix_time.rs",
    "src/agent/rotation.rs",
    "src/attest/parse.rs",
    "src/federation/plan.rs",
    "src/federation/foreign.rs",
]
# Core files that sit inside an edge module: `super::` from them is the edge.
INSIDE_EDGE = {
    "src/agent/rotation.rs",
    "src/attest/parse.rs",
    "src/federation/plan.rs",
    "src/federation/foreign.rs",
}

FORBIDDEN_PATHS = [
    "tokio",
    "tonic",
    "sled",
    "std::fs",
    "std::net",
    "std::process",
    "std::thread",
    "crate::store",
    "crate::api",
    "crate::tls",
    "crate::config",
    "crate::server",
    "crate::cli",
    "crate::files",
    "crate::net",
    "crate::agent",
    "crate::attest",
    "crate::clock",
]
FORBIDDEN_CALLS = re.compile(r"\b(SystemTime::now|Instant::now|clock::now|thread::sleep)\b")


def strip_comments_and_strings(text):
    """Blanks out comments and string/char literals, keeping line breaks, so
    that neither hides nor fakes code."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            j = n if end < 0 else end + 1 + len(hashes)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:]):
            m = re.match(r"'(\\.|[^\\'])'", text[i:])
            out.append("' '")
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_test_items(code):
    """Blanks the item after each #[cfg(test)] (keeping line numbers)."""
    out = list(code)
    for m in re.finditer(r"#\[cfg\(test\)\]", code):
        i = m.end()
        # Skip further attributes on the same item.
        while True:
            rest = code[i:]
            s = len(rest) - len(rest.lstrip())
            if rest[s:].startswith("#["):
                depth, j = 0, i + s
                while j < len(code):
                    if code[j] == "[":
                        depth += 1
                    elif code[j] == "]":
                        depth -= 1
                        if depth == 0:
                            break
                    j += 1
                i = j + 1
            else:
                break
        semi = code.find(";", i)
        brace = code.find("{", i)
        if brace < 0 or (0 <= semi < brace):
            end = len(code) if semi < 0 else semi + 1
        else:
            depth, j = 0, brace
            while j < len(code):
                if code[j] == "{":
                    depth += 1
                elif code[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            end = j + 1
        for k in range(m.start(), min(end, len(code))):
            if out[k] != "\n":
                out[k] = " "
    return "".join(out)


def expand_use(tree):
    """Expands a use tree (`std::{fs, io::Read}`) into full paths."""
    tree = re.sub(r"\s+", "", tree)
    depth, top = 0, None
    for i, c in enumerate(tree):
        if c == "{":
            if depth == 0 and top is None:
                top = i
            depth += 1
        elif c == "}":
            depth -= 1
    if top is None:
        return [re.sub(r"\bas\w+$", "", tree)] if tree else []
    prefix = tree[:top]
    inner = tree[top + 1 : tree.rfind("}")]
    parts, depth, start = [], 0, 0
    for i, c in enumerate(inner):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    parts.append(inner[start:])
    paths = []
    for p in parts:
        if not p:
            continue
        for sub in expand_use(p):
            paths.append(prefix[:-2] if sub == "self" else prefix + sub)
    return paths


def violations(path, rel):
    with open(path, encoding="utf-8") as f:
        code = drop_test_items(strip_comments_and_strings(f.read()))
    found = []

    def line_of(pos):
        return code.count("\n", 0, pos) + 1

    for m in re.finditer(r"\buse\s+([^;]+);", code):
        for p in expand_use(m.group(1)):
            p = p.lstrip(":")
            for bad in FORBIDDEN_PATHS:
                if p == bad or p.startswith(bad + "::"):
                    found.append((line_of(m.start()), f"imports {p}"))
            if rel in INSIDE_EDGE and p.startswith("super::"):
                found.append((line_of(m.start()), f"imports {p} (the edge module around it)"))
    # Use statements are checked above; blank them so paths are not counted twice.
    code = re.sub(r"\buse\s+[^;]+;", lambda m: re.sub(r"[^\n]", " ", m.group(0)), code)
    for m in re.finditer(r"(?<![\w:])(::)?((?:std|crate|tokio|tonic|sled)(?:::\w+)+)", code):
        p = m.group(2)
        for bad in FORBIDDEN_PATHS:
            if p == bad or p.startswith(bad + "::"):
                found.append((line_of(m.start()), f"names {p}"))
    for m in FORBIDDEN_CALLS.finditer(code):
        found.append((line_of(m.start()), f"calls {m.group(1)}"))
    if rel in INSIDE_EDGE:
        for m in re.finditer(r"(?<![\w:])super::", code):
            found.append((line_of(m.start()), "reaches the edge module around it through super::"))
    return sorted(set(found))


def core_files(root):
    for entry in CORE:
        full = os.path.join(root, entry)
        if os.path.isfile(full):
            yield entry
        for dirpath, _, files in os.walk(full):
            for name in sorted(files):
                if name.endswith(".rs"):
                    yield os.path.relpath(os.path.join(dirpath, name), root)


def is_test_file(rel):
    return rel.endswith("/tests.rs") or "/tests/" in rel


def check(root):
    bad = 0
    for rel in sorted(set(core_files(root))):
        if is_test_file(rel):
            continue
        for line, what in violations(os.path.join(root, rel), rel):
            print(f"{rel}:{line}: {what}")
            bad += 1
    return bad


SELF_TEST_CASES = {
    # name: (file contents, violations expected)
    "after_a_test_module": ("#[cfg(test)]\nmod tests;\nuse tokio::fs;\n", 1),
    "grouped_use": ("use std::{fs, io};\n", 1),
    "nested_group": ("use std::{io::{self, Read}, net::TcpStream};\n", 1),
    "inline_path": ("fn f() { let _ = std::fs::read(\"x\"); }\n", 1),
    "edge_module": ("use crate::agent::cache;\nuse crate::attest::Attestor;\nuse crate::clock;\n", 3),
    "wall_clock": ("fn f() { let _ = std::time::SystemTime::now(); }\n", 1),
    "sleep": ("fn f() { std::thread::sleep(d); }\n", 2),
    "test_block_is_exempt": ("#[cfg(test)]\nmod tests {\n    use tokio::fs;\n}\nfn ok() {}\n", 0),
    "after_a_test_block": ("#[cfg(test)]\nmod tests {\n    fn a() {}\n}\nuse sled::Db;\n", 1),
    "comments_and_strings_are_not_code": ("// use tokio::fs;\nconst S: &str = \"std::fs\";\n", 0),
    "clean": ("use std::time::{Duration, SystemTime};\nuse crate::id::SpiffeId;\n", 0),
}


def self_test():
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, (text, expected) in SELF_TEST_CASES.items():
            path = os.path.join(tmp, name + ".rs")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            got = violations(path, "src/id/" + name + ".rs")
            if len(got) != expected:
                print(f"self-test {name}: expected {expected} violation(s), found {got}")
                failures += 1
        path = os.path.join(tmp, "super.rs")
        with open(path, "w", encoding="utf-8") as f:
            f.write("use super::cache::IdentityCache;\n")
        if not violations(path, "src/agent/rotation.rs"):
            print("self-test super_from_inside_an_edge_module: not caught")
            failures += 1
    return failures


def main(argv):
    if "--self-test" in argv:
        failures = self_test()
        if failures:
            print("layer check self-test failed", file=sys.stderr)
            return 1
        print(f"layer check self-test: {len(SELF_TEST_CASES) + 1} cases caught as expected")
        return 0
    root = next((a for a in argv if not a.startswith("-")), ".")
    if check(root):
        print("layer check failed: the core above reaches into I/O or the edge (STYLE.md §1)", file=sys.stderr)
        return 1
    print("layer check: core is free of I/O and edge imports")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
