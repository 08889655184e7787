"""spp: qmail-spp plugins for spp-smtpd in Python, classic or persistent.

A plugin written with this module works both ways without change:

* classic (a plain line in control/smtpplugins): started for every command,
  it answers from its environment and exits;
* persistent (`#spp: persistent` on the line above): started once, it
  answers request after request on stdin/stdout, which saves the start-up
  of Python (about 13 ms) on every command.

    import spp

    def check(request):
        if request.env.get("SMTPRCPTTO", "").endswith("@example.test"):
            return "N"
        return "E550 sorry, no mailbox here by that name (#5.1.1)"

    spp.serve(check)

The handler gets a Request and returns the directives to print: a string
(one directive, or several separated by newlines), a list of strings, or
None for no verdict. An exception is logged on stderr and counts as no
verdict, as a classic plugin that exits with an error does.

Standard library only. The wire format is described in spp-smtpd's
README ("Persistent plugins").
"""

import os
import sys
import traceback

VERSION = 1
MODE_VARIABLE = "SPP_PERSISTENT"
MESSAGE_VARIABLE = "SPP_MESSAGE_FILE"


class ProtocolError(Exception):
    """The server sent something this module does not understand."""


class Request:
    """One question from the server.

    env      the environment a classic run would see (str to str; bytes
             that are not UTF-8 are kept with surrogateescape)
    hook     "connection", "helo", "mail", "rcpt", "data", "auth" or "body";
             None in classic mode, where the plugin's section says it
    session  the session id (None in classic mode)
    """

    def __init__(self, env, hook=None, session=None):
        self.env = env
        self.hook = hook
        self.session = session

    def message(self):
        """The message at [body], as a binary file (None elsewhere)."""
        path = self.env.get(MESSAGE_VARIABLE)
        if path is not None:
            return open(path, "rb")
        if self.hook is None:
            return sys.stdin.buffer
        return None


def persistent():
    """Whether this process was started as a persistent plugin."""
    return MODE_VARIABLE in os.environ


def _lines(answer):
    """The directive lines of a handler's answer."""
    if answer is None:
        return []
    if isinstance(answer, (list, tuple)):
        text = "\n".join(answer)
    else:
        text = str(answer)
    # `end ...` would end the reply early; it is not a directive anyway.
    return [l for l in text.split("\n") if l and not l.startswith("end ")]


def _answer(handler, request):
    try:
        return _lines(handler(request))
    except Exception:
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        return []


def _decode(raw):
    return raw.decode("utf-8", "surrogateescape")


def _encode(text):
    return text.encode("utf-8", "surrogateescape")


def _variables(block, count):
    """The COUNT variables of a request's block (LENGTH LF NAME=VALUE LF)."""
    env = {}
    at = 0
    for _ in range(count):
        lf = block.index(b"\n", at)
        end = lf + 1 + int(block[at:lf])
        name, _, value = block[lf + 1:end].partition(b"=")
        env[_decode(name)] = _decode(value)
        at = end + 1
    if at != len(block):
        raise ProtocolError("request block of the wrong size")
    return env


def serve(handler):
    """Answers the server: once (classic) or until stdin ends (persistent)."""
    if not persistent():
        out = _answer(handler, Request(dict(os.environ)))
        sys.stdout.buffer.write(b"".join(_encode(l) + b"\n" for l in out))
        sys.stdout.flush()
        return
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    hello = inp.readline()
    words = hello.split()
    if len(words) != 2 or words[0] != b"spp-persistent" or not words[1].isdigit():
        raise ProtocolError("unexpected handshake %r" % hello)
    version = min(int(words[1]), VERSION)
    out.write(b"spp-persistent %d\n" % version)
    out.flush()
    while True:
        header = inp.readline()
        if not header:
            return
        fields = header.split()
        if len(fields) != 6 or fields[0] != b"request":
            raise ProtocolError("unexpected request line %r" % header)
        rid, hook, session = fields[1], fields[2], fields[3]
        count, size = int(fields[4]), int(fields[5])
        block = inp.read(size)
        if len(block) != size:
            raise ProtocolError("request %s ended early" % _decode(rid))
        request = Request(_variables(block, count), _decode(hook), _decode(session))
        lines = _answer(handler, request)
        out.write(b"".join(_encode(l) + b"\n" for l in lines))
        out.write(b"end " + rid + b"\n")
        out.flush()
