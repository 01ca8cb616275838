#!/usr/bin/env python3
"""Checks the Docker build context without a container engine.

Applies .dockerignore (the pattern rules of Docker's builder: paths relative to
the context root, `*` and `?` within one path element, `**` across elements,
`!` re-includes, the last matching pattern wins, an excluded directory excludes
everything under it) to the files a fresh clone has, copies what is left to a
temporary directory, and runs `cargo metadata --locked` there: the
workspace, its path dependencies and Cargo.lock must all be in the context,
or `cargo build --locked` in the Dockerfile's build stage would fail.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def pattern_regex(pat):
    out, i = "", 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**/", i):
            out += "(.*/)?"
            i += 3
            continue
        if pat.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        else:
            out += re.escape(c)
        i += 1
    return re.compile("^" + out + "$")


def load_rules():
    rules = []
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            keep = line.startswith("!")
            pat = os.path.normpath(line.lstrip("!").lstrip("/"))
            rules.append((keep, pattern_regex(pat)))
    return rules


def excluded(path, rules):
    parts = path.split("/")
    # A path is out if it, or a directory above it, was excluded last.
    for n in range(1, len(parts) + 1):
        prefix = "/".join(parts[:n])
        state = None
        for keep, rx in rules:
            if rx.match(prefix):
                state = not keep
        if state:
            # Docker still walks an excluded directory when an exception
            # could re-include something below it; the last rule decides.
            below = "/".join(parts)
            final = state
            for keep, rx in rules:
                if rx.match(below):
                    final = not keep
            return final
    return False


def main():
    rules = load_rules()
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    files = [f for f in files if f and os.path.isfile(os.path.join(ROOT, f))]
    context = [f for f in files if not excluded(f, rules)]
    for must_not in ("target/", ".git/"):
        if any(f.startswith(must_not) for f in context):
            sys.exit(f"check-docker-context: {must_not} is in the build context")
    if not any(f == "Cargo.lock" for f in context):
        sys.exit("check-docker-context: Cargo.lock is not in the build context")
    size = 0
    with tempfile.TemporaryDirectory(prefix="weir-docker-context-") as tmp:
        for f in context:
            dst = os.path.join(tmp, f)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, f), dst)
            size += os.path.getsize(dst)
        host = subprocess.run(["rustc", "-vV"], check=True, capture_output=True, text=True).stdout
        host = next(l.split(": ", 1)[1] for l in host.splitlines() if l.startswith("host: "))
        cmd = ["cargo", "metadata", "--locked", "--format-version", "1", "--filter-platform", host]
        # Offline first (CI has built the workspace by now); on a machine that
        # never built it, let cargo fetch the crates.
        r = subprocess.run(cmd + ["--offline"], cwd=tmp, capture_output=True, text=True)
        if r.returncode != 0 and "--offline was specified" in r.stderr:
            r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit("check-docker-context: cargo metadata fails in the build context:\n" + r.stderr)
    print(f"check-docker-context: {len(context)} of {len(files)} files "
          f"({size // 1024} KiB) in the build context; the workspace resolves there")


if __name__ == "__main__":
    main()
