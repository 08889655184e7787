#!/usr/bin/env python3
"""[rcpt] plugin: accept the recipients listed in a file, refuse the others.

    rcpt-allowlist.py FILE

FILE has one address per line (case does not matter; blank lines and
lines starting with # are skipped). A listed recipient gets `N` (the
server's own checks still apply); any other gets
`E550 sorry, no mailbox here by that name (#5.1.1)`. The file is read again
when it changes, so a persistent instance needs no restart.

Works classic (one run per RCPT) and persistent:

    [rcpt]
    #spp: persistent workers=2 timeout=2s
    plugins-examples/rcpt-allowlist.py control/allowed-rcpts
"""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ beside the plugins
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spp  # noqa: E402

REFUSAL = "E550 sorry, no mailbox here by that name (#5.1.1)"


class Allowlist:
    """The addresses of FILE, read again when its mtime or size changes."""

    def __init__(self, path):
        self.path = path
        self.stamp = None
        self.addresses = frozenset()

    def current(self):
        try:
            st = os.stat(self.path)
        except OSError as e:
            print("rcpt-allowlist: cannot read %s: %s" % (self.path, e), file=sys.stderr)
            return self.addresses
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self.stamp:
            with open(self.path, "rb") as f:
                words = (line.strip().lower() for line in f)
                self.addresses = frozenset(
                    w.decode("utf-8", "surrogateescape")
                    for w in words
                    if w and not w.startswith(b"#")
                )
            self.stamp = stamp
        return self.addresses


def main():
    if len(sys.argv) != 2:
        print("usage: rcpt-allowlist.py FILE", file=sys.stderr)
        sys.exit(1)
    allowlist = Allowlist(sys.argv[1])

    def check(request):
        rcpt = request.env.get("SMTPRCPTTO", "").lower()
        return "N" if rcpt in allowlist.current() else REFUSAL

    spp.serve(check)


if __name__ == "__main__":
    main()
