"""The public boundary of each shared library (include/dynamo/export.h).

Usage: check_exports.py INCLUDE_DIR LIB:HEADERS [LIB:HEADERS ...]

HEADERS is "core" (include/dynamo/*.h) or "llm" (include/dynamo/llm/*.h and
the `dyn_services` table). Each library must export nothing that those
headers do not declare DYN_EXTERN (no dyn__ internals, no helpers of the
libraries it carries); a "core" library must also export every function
its headers declare, so a missing definition or a missing mark fails here
rather than in a user's link.
"""
import glob
import os
import re
import subprocess
import sys

DECL = re.compile(r"DYN_EXTERN\b[^;{]*?\b(dyn_[a-z0-9_]+)\s*[(\[]", re.S)
# Symbols every ELF shared object defines on its own.
LINKER = {"_init", "_fini", "__bss_start", "_edata", "_end"}


def declared(paths):
    names = set()
    for p in paths:
        with open(p) as f:
            names.update(DECL.findall(f.read()))
    return names


def exported(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True,
                         capture_output=True, text=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()} - LINKER
    # AddressSanitizer's own markers beside instrumented globals.
    return {n for n in names if not n.startswith(("__odr_asan", "__asan"))}


def main(argv):
    inc = argv[1]
    core = declared(glob.glob(os.path.join(inc, "dynamo", "*.h")))
    llm = declared(glob.glob(os.path.join(inc, "dynamo", "llm", "*.h")))
    if len(core) < 50 or len(llm) < 20:
        print(f"FAIL: found only {len(core)} core and {len(llm)} llm public names in {inc}")
        return 1
    failed = 0
    for spec in argv[2:]:
        lib, kind = spec.rsplit(":", 1)
        public = core if kind == "core" else llm | {"dyn_services"}
        got = exported(lib)
        extra = sorted(got - public)
        # dyn_services is declared in dynamo/service.h for the objects that
        # define it (libdynamo_llm.so, a user's services), not by libdynamo.
        missing = sorted(public - got - {"dyn_services"}) if kind == "core" else []
        name = os.path.basename(lib)
        if extra:
            failed += 1
            print(f"FAIL: {name} exports {len(extra)} symbols that are not public API: "
                  + ", ".join(extra[:40]))
        if missing:
            failed += 1
            print(f"FAIL: {name} does not export {len(missing)} public functions: "
                  + ", ".join(missing[:40]))
        if not extra and not missing:
            print(f"ok: {name} exports {len(got)} symbols, all public API")
    passed = len(argv) - 2 - failed
    print(f"{max(passed, 0)} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
