#!/usr/bin/env python3
#
# greylist.py - greylisting for spp-smtpd (Python 3, standard library only)
#
# Hook:      [rcpt]
#
# smtpplugins:
#     [rcpt]
#     plugins-examples/greylist.py
#   state shared by several servers in Redis, a longer delay:
#     plugins-examples/greylist.py --redis 192.0.2.50:6379 --delay 600
#   or, with settings from the environment through the shell:
#     :GREYLIST_DELAY=600 exec plugins-examples/greylist.py
#
# What it does: a mail server that is new to us gets a temporary refusal for
# each recipient and must come back later. Well-behaved servers keep the
# message in their queue and retry; much bulk-mail software does not. The
# key is the triple (client network, envelope sender, recipient):
#   * first attempt for a triple                     -> refused (451)
#   * retries before the delay has passed            -> refused (451)
#   * the first retry after the delay, and before the
#     triple expired                                 -> accepted, and the
#     triple is remembered as passed; later mail for it is accepted at once.
#   * a triple not retried in time (the expiry), or a passed one that sent
#     no mail for the keep time, is forgotten and starts over.
# The client network is the /24 of an IPv4 address (or the /64 of an IPv6
# address), because large senders retry from a different machine of the same
# pool. Sender and recipient are compared without regard to ASCII case.
#
# Settings: an argument wins over the variable; a bad value is logged and
# the default used.
#   --delay SECONDS  GREYLIST_DELAY   how long a new triple must wait before a
#                                     retry is accepted; default 300
#   --expire SECONDS GREYLIST_EXPIRE  how long a triple that has not passed
#                                     yet is remembered; default 86400 (1 day)
#   --keep SECONDS   GREYLIST_KEEP    how long a passed triple is remembered
#                                     after its last accepted recipient;
#                                     default 3024000 (35 days)
#   --db PATH        GREYLIST_DB      the SQLite database; default
#                                     var/greylist.sqlite, relative to the
#                                     working directory, which is the server's
#                                     home. Created with its directory when
#                                     missing; the directory must be writable
#                                     by the user the server runs as.
#   --redis HOST:PORT GREYLIST_REDIS  keep the state in this Redis server
#                                     instead ([IPv6]:PORT; the port defaults
#                                     to 6379), so that several mail servers
#                                     share it: a client that was greylisted by
#                                     one is accepted by another after the
#                                     delay. The times then come from the
#                                     Redis server's clock, so the mail
#                                     servers' clocks need not agree.
#
# Reads as well:
#   TCPREMOTEIP     client address (set by tcpserver / the daemon)
#   SMTPMAILFROM    envelope sender of this transaction (may be empty: bounces)
#   SMTPRCPTTO      recipient of this RCPT
#   RELAYCLIENT     if present (even empty) the client may relay - local
#                   networks from tcprules, or a user who authenticated - and
#                   is never greylisted
#
# Prints:
#   E451 greylisted, try again later (#4.7.1)
# to refuse the recipient temporarily, or nothing to let the server go on
# with its normal checks. Messages for the log go to stderr.
#
# Failure policy: greylisting must never lose or block mail because of a
# problem of its own. Any internal error (unwritable database, Redis down,
# full disk) prints nothing, logs the reason to stderr and exits 0, so the
# recipient is accepted as if the plugin were not there.
#
# State: a triple is known by the SHA-256 of (network, sender, recipient), so
# no address is stored.
#   * SQLite: the table greylist (triple, first_seen, passed, expires), times
#     in seconds since the epoch. Each run deletes the rows that expired, so
#     the file needs no clean-up from cron.
#   * Redis: the key greylist:<sha256 in hex>, a string "pending <first_seen>"
#     or "passed", with a time to live (the expiry, or the keep time), so
#     Redis forgets old triples by itself. Nothing else in Redis is touched.
#
# Test by hand, from the server's home directory (the first run prints E451,
# the second, with no delay, prints nothing):
#     export TCPREMOTEIP=192.0.2.7 SMTPMAILFROM=a@example.org SMTPRCPTTO=b@example.test
#     plugins-examples/greylist.py
#     plugins-examples/greylist.py --delay 0

import hashlib
import ipaddress
import os
import socket
import sqlite3
import sys
import time

GREYLISTED = "E451 greylisted, try again later (#4.7.1)"

# (argument, variable, default) of each number of seconds.
DURATIONS = {
    "delay": ("--delay", "GREYLIST_DELAY", 300),
    "expire": ("--expire", "GREYLIST_EXPIRE", 86400),
    "keep": ("--keep", "GREYLIST_KEEP", 35 * 86400),
}
PATHS = {
    "db": ("--db", "GREYLIST_DB", "var/greylist.sqlite"),
    "redis": ("--redis", "GREYLIST_REDIS", ""),
}
REDIS_PORT = 6379
REDIS_TIMEOUT = 5.0
SQLITE_BUSY_TIMEOUT = 10.0


def log(message):
    """One line for the server's log (the plugin's stderr)."""
    print("greylist.py: " + message, file=sys.stderr)


# ---------------------------------------------------------------------------
# Settings


def parse_arguments(argv):
    """The arguments as {"--name": value}; accepts "--name value" and
    "--name=value". Unknown or incomplete arguments are logged and skipped."""
    known = {flag for flag, _, _ in list(DURATIONS.values()) + list(PATHS.values())}
    given = {}
    words = list(argv)
    while words:
        word = words.pop(0)
        name, equals, value = word.partition("=")
        if name not in known:
            log("unknown argument %r ignored" % word)
            continue
        if not equals:
            if not words:
                log("%s wants a value; ignored" % name)
                continue
            value = words.pop(0)
        given[name] = value
    return given


def settings(argv):
    """Every setting, from the arguments, else the environment, else the
    default."""
    given = parse_arguments(argv)
    result = {}
    for key, (flag, variable, default) in DURATIONS.items():
        raw = given.get(flag, os.environ.get(variable, "")).strip()
        source = flag if flag in given else variable
        if raw == "":
            result[key] = default
            continue
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if value < 0:
            log("%s=%r is not a number of seconds; using %d" % (source, raw, default))
            value = default
        result[key] = value
    for key, (flag, variable, default) in PATHS.items():
        result[key] = given.get(flag, os.environ.get(variable, "")) or default
    return result


# ---------------------------------------------------------------------------
# The triple


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


def triple_key(network, sender, recipient):
    """The SHA-256 (hex) that stands for one triple."""
    key = b"\0".join([network.encode("utf-8", "surrogateescape"), sender.lower(), recipient.lower()])
    return hashlib.sha256(key).hexdigest()


# ---------------------------------------------------------------------------
# The verdict, the same for both stores


class Verdict:
    """What happened to a triple, and what to log (None: nothing, for a
    triple that passed before)."""

    def __init__(self, passes, why):
        self.passes = passes
        self.why = why


def decide(state, now, first_seen, config):
    """The verdict for a triple in `state` ("new", "pending" or "passed");
    `first_seen` is set for "pending"."""
    if state == "new":
        return Verdict(False, "first attempt")
    if state == "passed":
        return Verdict(True, None)
    waited = now - first_seen
    if waited < config["delay"]:
        return Verdict(False, "retry after %d s, before the %d s delay" % (waited, config["delay"]))
    return Verdict(True, "retried after %d s" % waited)


# ---------------------------------------------------------------------------
# SQLite

SCHEMA = """
CREATE TABLE IF NOT EXISTS greylist (
    triple     TEXT PRIMARY KEY,   -- SHA-256 of the triple, hex
    first_seen REAL NOT NULL,      -- first attempt, seconds since the epoch
    passed     INTEGER NOT NULL,   -- 1 once a retry came after the delay
    expires    REAL NOT NULL       -- when to forget the triple
);
CREATE INDEX IF NOT EXISTS greylist_expires ON greylist (expires);
"""


def check_sqlite(path, key, config):
    """The verdict for `key`, recorded in the SQLite database at `path`."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    connection = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None)
    try:
        connection.executescript(SCHEMA)
        # One writer at a time: of two sessions seeing a new triple at once,
        # one inserts it and the other finds it.
        connection.execute("BEGIN IMMEDIATE")
        now = time.time()
        connection.execute("DELETE FROM greylist WHERE expires <= ?", (now,))
        row = connection.execute(
            "SELECT first_seen, passed FROM greylist WHERE triple = ?", (key,)
        ).fetchone()
        if row is None:
            verdict = decide("new", now, None, config)
            connection.execute(
                "INSERT INTO greylist (triple, first_seen, passed, expires) VALUES (?, ?, 0, ?)",
                (key, now, now + config["expire"]),
            )
        else:
            first_seen, passed = row
            verdict = decide("passed" if passed else "pending", now, first_seen, config)
            if verdict.passes:
                connection.execute(
                    "UPDATE greylist SET passed = 1, expires = ? WHERE triple = ?",
                    (now + config["keep"], key),
                )
        connection.execute("COMMIT")
    finally:
        connection.close()
    return verdict


# ---------------------------------------------------------------------------
# Redis, spoken directly (RESP, the Redis serialization protocol)


class RedisError(Exception):
    pass


class Redis:
    """One connection to a Redis server; commands are sent one at a time."""

    def __init__(self, address):
        host, port = split_host_port(address, REDIS_PORT)
        self.socket = socket.create_connection((host, port), timeout=REDIS_TIMEOUT)
        self.reader = self.socket.makefile("rb")

    def close(self):
        self.reader.close()
        self.socket.close()

    def command(self, *words):
        """Sends one command (an array of bulk strings) and returns the reply:
        bytes, an int, a list, or None for a nil reply."""
        encoded = [w if isinstance(w, bytes) else str(w).encode() for w in words]
        message = b"*%d\r\n" % len(encoded)
        for word in encoded:
            message += b"$%d\r\n%s\r\n" % (len(word), word)
        self.socket.sendall(message)
        return self.reply()

    def reply(self):
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise RedisError("connection closed by the Redis server")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            length = int(rest)
            if length < 0:
                return None
            data = self.reader.read(length + 2)
            if len(data) != length + 2:
                raise RedisError("connection closed by the Redis server")
            return data[:-2]
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            return [self.reply() for _ in range(count)]
        raise RedisError("unexpected reply %r" % line[:40])


def split_host_port(address, default_port):
    """("host", port) from "host", "host:port", "[v6]" or "[v6]:port"."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    else:
        host, port = address, ""
    if not host:
        raise ValueError("no host in %r" % address)
    return host, int(port) if port else default_port


def check_redis(address, key, config):
    """The verdict for `key`, recorded in the Redis server at `address`."""
    redis = Redis(address)
    try:
        name = "greylist:" + key
        seconds, microseconds = redis.command("TIME")
        now = int(seconds) + int(microseconds) / 1e6
        pending = "pending %.6f" % now
        # SET ... NX: of two servers seeing a new triple at once, one sets it.
        if redis.command("SET", name, pending, "NX", "EX", max(config["expire"], 1)) is not None:
            return decide("new", now, None, config)
        value = redis.command("GET", name)
        if value is None:  # expired just now
            return decide("new", now, None, config)
        if value == b"passed":
            verdict = decide("passed", now, None, config)
        elif value.startswith(b"pending "):
            verdict = decide("pending", now, float(value[8:]), config)
        else:
            raise RedisError("%s holds %r, not a greylist entry" % (name, value[:40]))
        if verdict.passes:
            redis.command("SET", name, "passed", "EX", max(config["keep"], 1))
        return verdict
    finally:
        redis.close()


# ---------------------------------------------------------------------------


def verdict_line(argv):
    """The line to print, or None to let the recipient through."""
    config = settings(argv)
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
    key = triple_key(network, sender, recipient)

    if config["redis"]:
        verdict = check_redis(config["redis"], key, config)
    else:
        verdict = check_sqlite(config["db"], key, config)

    if verdict.why is not None:
        log(
            "%s %s <%s> -> <%s>: %s"
            % (
                "passed" if verdict.passes else "greylisted",
                network,
                sender.decode("utf-8", "backslashreplace"),
                recipient.decode("utf-8", "backslashreplace"),
                verdict.why,
            )
        )
    return None if verdict.passes else GREYLISTED


def main():
    try:
        line = verdict_line(sys.argv[1:])
    except Exception as error:  # never block mail because of our own problem
        log("internal error, recipient not greylisted: %s" % error)
        return 0
    if line is not None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
