#!/bin/sh
#
# clamav.sh - refuse messages in which ClamAV (clamd, via clamdscan) finds a virus
#
# Hook:      [body]   (runs after the final dot; the message is on stdin)
#
# smtpplugins:
#     [body]
#     plugins-examples/clamav.sh --config-file=/etc/clamav/clamd.conf
#
# Usage:     clamav.sh [--accept-on-error] [clamdscan options...]
#            --accept-on-error   let the message through when the scan fails
#                                (clamd down, timeout, message too big for
#                                clamd's StreamMaxLength); only as the first
#                                argument. The default refuses temporarily.
#            Everything else goes to clamdscan unchanged, typically
#            --config-file=FILE naming clamd's LocalSocket or TCPSocket and
#            TCPAddr. The message is passed as `-` (stdin): over a Unix
#            socket clamdscan hands clamd the open file, over TCP it streams
#            it (then clamd's StreamMaxLength, 25 MB by default, must be at
#            least the server's databytes).
#
# Reads:     the message on stdin (as it will be queued, LF line ends).
#            ClamAV decodes the MIME parts itself, so attachments are
#            scanned in their decoded form.
#
# Prints:    for a clean message
#                HX-Virus-Scanned: clamav
#            (adds that header to the queued message); for an infected one
#                E554 message contains a virus: Eicar-Signature (#5.7.0)
#            with the name clamd reported (letters, digits and ._:/- only),
#            which refuses the message; when the scan fails
#                E451 virus scanner unavailable (#4.3.0)
#            so the client tries again later (a virus scanner that is down
#            must not let viruses through), or nothing with
#            --accept-on-error. The reason of a failure goes to stderr.
#            No `N`: it would end the hook and skip the [body] plugins
#            listed after this one.
#
# Exit status: always 0 (the server ignores it; what counts is the output).
# A clamdscan that hangs is killed by the server's plugin time limit (30 s),
# which also refuses the message temporarily.
#
# Test by hand, from the server's home, with clamd running:
#     env -i PATH=/usr/bin:/bin plugins-examples/clamav.sh \
#         --config-file=/etc/clamav/clamd.conf </path/to/message
#
# Needs clamdscan (Debian package clamdscan) and a running clamd
# (package clamav-daemon).

me=clamav.sh

on_error=tempfail
if [ "${1-}" = --accept-on-error ]; then
    on_error=accept
    shift
fi

failed() {
    echo "$me: $1" >&2
    if [ "$on_error" = tempfail ]; then
        printf '%s\n' 'E451 virus scanner unavailable (#4.3.0)'
    else
        echo "$me: message accepted unscanned (--accept-on-error)" >&2
    fi
    exit 0
}

if ! command -v clamdscan >/dev/null 2>&1; then
    failed "clamdscan not found in PATH"
fi

# clamdscan exits 0 when clean, 1 when it found something, 2 on errors.
# --stdout puts the verdict ("stream: NAME FOUND", "fd[3]: OK") and most
# errors on stdout; the rest of the errors are caught with 2>&1.
output=$(clamdscan --no-summary --stdout "$@" - 2>&1)
status=$?

case $status in
    0)
        printf '%s\n' 'HX-Virus-Scanned: clamav'
        ;;
    1)
        # The first "<what>: <signature> FOUND" line; names have no ": ".
        name=$(printf '%s\n' "$output" | sed -n 's/^.*: \(.*\) FOUND$/\1/p' | sed -n 1p |
            tr -cd 'A-Za-z0-9._:/-')
        [ -n "$name" ] || name=unknown
        printf 'E554 message contains a virus: %s (#5.7.0)\n' "$name"
        ;;
    *)
        failed "clamdscan failed (exit $status): $(printf '%s' "$output" | tr '\n' ' ')"
        ;;
esac
exit 0
