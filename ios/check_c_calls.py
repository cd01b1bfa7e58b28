#!/usr/bin/env python3
"""Checks the mobile bindings against the C header, without compiling them.

Swift cannot be compiled on the Linux CI machine (and the Kotlin sources
only when android/hosttest/run.sh could fetch a Kotlin compiler), so this
script checks by reading the sources:

1. Every rd_* function that the Swift wrapper (ios/Sources) and the JNI
   bridge (android/src/main/cpp) call is declared in include/recurrent_depth.h.
2. Every other rd_* name (types) and RD_* name (constants, status codes) they
   use is defined there, and every snake_case identifier in the Swift sources
   (the C struct fields it reads and writes) appears in the header.
3. Every RdNative member the Kotlin sources use exists in RdNative.java
   (the Java class whose native methods the JNI bridge registers).

Prints what it checked and exits 1 on the first list of problems.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
HEADER = ROOT / "include" / "recurrent_depth.h"
SWIFT = sorted((ROOT / "ios" / "Sources").rglob("*.swift"))
JNI = sorted((ROOT / "android" / "src" / "main" / "cpp").glob("*.c"))
KOTLIN = sorted((ROOT / "android" / "src" / "main" / "kotlin").rglob("*.kt"))
RDNATIVE = ROOT / "android" / "src" / "main" / "java" / "dev" / "recurrentdepth" / "RdNative.java"


def strip_comments_and_strings(text: str) -> str:
    """Removes // and /* */ comments and string literals (C, Swift, Kotlin)."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r'"""[\s\S]*?"""', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\\n])*"', '""', text)
    text = re.sub(r"//[^\n]*", " ", text)
    return text


def header_names(text: str):
    code = strip_comments_and_strings(text)
    functions = set(re.findall(r"\b(rd_\w+)\s*\(", code))
    types = set(re.findall(r"\btypedef\b[^;]*?\b(rd_\w+)\s*;", code))
    types |= set(re.findall(r"\bstruct\s+(rd_\w+)", code))
    types |= set(re.findall(r"\benum\s+(rd_\w+)", code))
    types |= set(re.findall(r"\(\s*\*\s*(rd_\w+)\s*\)", code))  # function pointer typedefs
    functions -= types
    constants = set(re.findall(r"#define\s+(RD_\w+)", code))
    constants |= set(re.findall(r"\b(RD_\w+)\s*=", code))
    identifiers = set(re.findall(r"\b[A-Za-z_]\w*\b", code))
    return functions, types, constants, identifiers


def main() -> int:
    functions, types, constants, identifiers = header_names(HEADER.read_text())
    problems = []
    called = {}
    for path in SWIFT + JNI:
        code = strip_comments_and_strings(path.read_text())
        rel = path.relative_to(ROOT)
        for name in re.findall(r"\b(rd_\w+)\s*\(", code):
            if name in types:
                continue  # a conversion or zero initialiser, e.g. rd_token(x)
            called.setdefault(name, set()).add(str(rel))
            if name not in functions:
                problems.append(f"{rel}: calls {name}(), which the header does not declare")
        for name in set(re.findall(r"\b(rd_\w+)\b", code)):
            if name not in functions and name not in types:
                problems.append(f"{rel}: uses {name}, which the header does not define")
        for name in set(re.findall(r"\b(RD_\w+)\b", code)):
            if name not in constants and not name.startswith("RD_JNI_"):
                problems.append(f"{rel}: uses {name}, which the header does not define")
        if path.suffix == ".swift":
            for name in set(re.findall(r"\b([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\b", code)):
                if name not in identifiers:
                    problems.append(f"{rel}: uses {name}, which is not in the header (a C field?)")

    java = strip_comments_and_strings(RDNATIVE.read_text())
    members = set(re.findall(r"\bstatic\s+(?:final\s+)?(?:native\s+)?[\w\[\]]+\s+(\w+)\s*[(=;]", java))
    kotlin_uses = set()
    for path in KOTLIN:
        code = strip_comments_and_strings(path.read_text())
        for name in re.findall(r"\bRdNative\.(\w+)", code):
            kotlin_uses.add(name)
            if name not in members:
                problems.append(f"{path.relative_to(ROOT)}: uses RdNative.{name}, not in RdNative.java")

    for name in sorted(called):
        print(f"  {name:28} {', '.join(sorted(called[name]))}")
    print(f"{len(called)} rd_* functions called by the Swift wrapper and the JNI bridge "
          f"({len(SWIFT)} Swift, {len(JNI)} C files); the header declares {len(functions)}")
    print(f"{len(kotlin_uses)} RdNative members used by {len(KOTLIN)} Kotlin files")
    if not SWIFT or not JNI or not KOTLIN:
        problems.append("no sources found")
    if problems:
        for p in sorted(set(problems)):
            print("FAIL " + p)
        return 1
    print("mobile bindings match include/recurrent_depth.h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
