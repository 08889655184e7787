#!/usr/bin/env python3
#
# greylist.py - greylisting for spp-smtpd (Python 3, standard library only)
#
# Hook:      [rcpt]
#
# smtpplugins:
#     [rcpt]
#     plugins-examples/greylist.py
#   or, to give it settings of its own through the shell:
#     :GREYLIST_DELAY=600 exec plugins-examples/greylist.py
#
# What it does: a mail server that is new to us gets a temporary refusal for
# each recipient and must come back later. Well-behaved servers keep the
# message in their queue and retry; much bulk-mail software does not. The
# key is the triple (client network, envelope sender, recipient):
#   * first attempt for a triple                     -> refused (451)
#   * retries before GREYLIST_DELAY seconds passed   -> refused (451)
#   * the first retry after the delay                -> accepted, and the
#     triple is remembered as passed; later mail for it is accepted at once.
# The client network is the /24 of an IPv4 address (or the /64 of an IPv6
# address), because large senders retry from a different machine of the same
# pool. Sender and recipient are compared without regard to ASCII case.
#
# Reads:
#   TCPREMOTEIP     client address (set by tcpserver / the daemon)
#   SMTPMAILFROM    envelope sender of this transaction (may be empty: bounces)
#   SMTPRCPTTO      recipient of this RCPT
#   RELAYCLIENT     if present (even empty) the client may relay - local
#                   networks from tcprules, or a user who authenticated - and
#                   is never greylisted
#   GREYLIST_DIR    state directory; default "var/greylist", relative to the
#                   working directory, which is the server's home. Created if
#                   missing; must be writable by the user the server runs as.
#   GREYLIST_DELAY  seconds a triple must wait before a retry is accepted;
#                   default 300
#
# Prints:
#   E451 greylisted, try again later (#4.7.1)
# to refuse the recipient temporarily, or nothing to let the server go on
# with its normal checks. Messages for the log go to stderr.
#
# Failure policy: greylisting must never lose or block mail because of a
# problem of its own. Any internal error (unwritable directory, full disk,
# bad settings) prints nothing, logs the reason to stderr and exits 0, so the
# recipient is accepted as if the plugin were not there.
#
# State: one file per triple, GREYLIST_DIR/ab/abcdef... where the name is the
# SHA-256 of the triple, so no address ever becomes part of a path.
#   * an empty file is a pending triple; its mtime is when it was first seen.
#   * a file containing "passed" is a triple that passed; its mtime is when it
#     was last used (refreshed on each accepted recipient).
# Old entries are removed from cron, e.g. daily:
#     find /var/spp-smtpd/var/greylist -type f -mtime +35 -delete
# which forgets pending triples that were never retried (they start over)
# and passed triples that have not sent mail for 35 days.
#
# Test by hand, from the server's home directory (the first run prints E451,
# the second, with no delay, prints nothing):
#     export TCPREMOTEIP=192.0.2.7 SMTPMAILFROM=a@example.org SMTPRCPTTO=b@example.test
#     plugins-examples/greylist.py
#     GREYLIST_DELAY=0 plugins-examples/greylist.py

import hashlib
import ipaddress
import os
import sys
import time

GREYLISTED = "E451 greylisted, try again later (#4.7.1)"
DEFAULT_DIR = "var/greylist"
DEFAULT_DELAY = 300
PASSED_MARK = b"passed\n"


def log(message):
    """One line for the server's log (the plugin's stderr)."""
    print("greylist.py: " + message, file=sys.stderr)


def client_network(remote_ip):
    """The network a client address belongs to, as text: /24 for IPv4, /64
    for IPv6 (an IPv4-mapped IPv6 address counts as IPv4). A value that is
    not an IP address (e.g. "unknown") is used as it is."""
    try:
        address = ipaddress.ip_address(remote_ip)
    except ValueError:
        return remote_ip
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network((address, prefix), strict=False))


def delay_setting():
    """GREYLIST_DELAY in seconds; a bad value is logged and the default used."""
    raw = os.environ.get("GREYLIST_DELAY", "").strip()
    if raw == "":
        return DEFAULT_DELAY
    try:
        delay = int(raw)
    except ValueError:
        delay = -1
    if delay < 0:
        log("GREYLIST_DELAY=%r is not a number of seconds; using %d" % (raw, DEFAULT_DELAY))
        return DEFAULT_DELAY
    return delay


def state_file(directory, network, sender, recipient):
    """Path of the file that stands for one triple."""
    key = b"\0".join([network.encode("utf-8", "surrogateescape"), sender.lower(), recipient.lower()])
    digest = hashlib.sha256(key).hexdigest()
    return os.path.join(directory, digest[:2], digest)


def mark_passed(path):
    """Record that the triple passed. Written to a temporary file and renamed
    over the old one, so a concurrent reader sees either the old or the new
    state, never a half-written file."""
    temporary = "%s.%d.tmp" % (path, os.getpid())
    with open(temporary, "wb") as f:
        f.write(PASSED_MARK)
    os.replace(temporary, path)


def may_pass(path, delay, description):
    """True if the triple may pass now; records first sightings and passes."""
    try:
        # O_EXCL: of two sessions seeing a new triple at once, one creates it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)
        log("greylisted %s: first attempt" % description)
        return False

    with open(path, "rb") as f:
        if f.read(len(PASSED_MARK)) == PASSED_MARK:
            os.utime(path)  # last seen, so that the cron clean-up keeps it
            return True
        first_seen = os.fstat(f.fileno()).st_mtime

    waited = time.time() - first_seen
    if delay > 0 and waited < delay:
        log("greylisted %s: retry after %d s, before the %d s delay" % (description, waited, delay))
        return False
    mark_passed(path)
    log("passed %s: retried after %d s" % (description, waited))
    return True


def verdict():
    """The line to print, or None to let the recipient through."""
    if "RELAYCLIENT" in os.environ:
        return None
    # Addresses are taken as bytes: they come from the client and need not
    # be valid UTF-8.
    recipient = os.environb.get(b"SMTPRCPTTO")
    if recipient is None:
        log("SMTPRCPTTO is not set; list this plugin under [rcpt]")
        return None
    sender = os.environb.get(b"SMTPMAILFROM", b"")
    network = client_network(os.environ.get("TCPREMOTEIP", "unknown"))

    directory = os.environ.get("GREYLIST_DIR") or DEFAULT_DIR
    path = state_file(directory, network, sender, recipient)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)

    description = "%s <%s> -> <%s>" % (
        network,
        sender.decode("utf-8", "backslashreplace"),
        recipient.decode("utf-8", "backslashreplace"),
    )
    if may_pass(path, delay_setting(), description):
        return None
    return GREYLISTED


def main():
    try:
        line = verdict()
    except Exception as error:  # never block mail because of our own problem
        log("internal error, recipient not greylisted: %s" % error)
        return 0
    if line is not None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
