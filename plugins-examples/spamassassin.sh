#!/bin/sh
#
# spamassassin.sh - score the message with SpamAssassin (spamd, via spamc)
#
# Hook:      [body]   (runs after the final dot; the message is on stdin)
#
# smtpplugins:
#     [body]
#     plugins-examples/spamassassin.sh -s 10 -d 127.0.0.1 -p 783
#
# Usage:     spamassassin.sh [-s SCORE] [spamc options...]
#            -s SCORE   refuse messages scoring SCORE or more (a number such
#                       as 10 or 7.5; SpamAssassin's own "required" score is
#                       also an "or more" limit). Without -s, nothing is
#                       ever refused: the plugin only adds headers. Only as
#                       the first argument.
#            Everything else goes to spamc unchanged: -d HOST, -p PORT,
#            -U SOCKET, -u USER, -t TIMEOUT, --max-size=BYTES, ... (spamc's
#            own -s is its maximum message size; write it --max-size=).
#            Do not pass options that change spamc's output (-R, -y, -E):
#            the plugin reads the "score/required" line of `spamc -c`.
#
# Reads:     the message on stdin (as it will be queued, LF line ends).
#            The environment is not needed; SMTPMAILFROM, SMTPRCPTS and
#            SMTPMESSAGESIZE are there for plugins that want them.
#
# Prints:    for a message below the -s limit (or always, without -s):
#                HX-Spam-Score: 3.2
#                HX-Spam-Status: No, score=3.2 required=5.0
#            and, when spamd calls it spam (score >= its required score),
#                HX-Spam-Status: Yes, score=7.9 required=5.0
#                HX-Spam-Flag: YES
#            Each H line adds that header to the queued message. At or above
#            the -s limit, only
#                E550 message looks like spam (score 1003.3) (#5.7.1)
#            which refuses the message after the final dot.
#            Nothing else, and in particular no `N`: `N` would end the hook
#            and skip the [body] plugins listed after this one (a virus
#            scanner, say); printing nothing accepts the same way.
#            Headers already in the message are left alone: a sender may
#            have put X-Spam-* headers in it, so filter on the last ones
#            (added below the server's Received: line) or remove the
#            client's copies further down the line.
#
# Failures:  when spamc cannot reach spamd, times out (-t 20 unless given),
#            or gets no score (message over --max-size, default 500 KB),
#            the message is accepted unscored: nothing on stdout, the reason
#            on stderr (the server logs it). A spam filter that is down
#            must not stop mail. A bad -s value is logged the same way.
#
# Exit status: always 0 (the server ignores it; what counts is the output).
#
# Test by hand, from the server's home, with spamd on 127.0.0.1:783:
#     printf 'Subject: t\n\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n' \
#         > /tmp/gtube
#     env -i PATH=/usr/bin:/bin plugins-examples/spamassassin.sh -s 10 \
#         -d 127.0.0.1 -p 783 </tmp/gtube
#     # E550 message looks like spam (score 1005.2) (#5.7.1)
#     # (GTUBE alone scores 1000; the other rules add a little)
#
# Needs spamc (Debian package spamc) and a running spamd (package spamd).

me=spamassassin.sh

# Accepts: a plain decimal number, optionally negative.
is_number() {
    case $1 in
        '' | - | . | -. | *[!0-9.-]* | ?*-* | *.*.*) return 1 ;;
    esac
    return 0
}

limit=
if [ "${1-}" = -s ]; then
    if [ $# -lt 2 ] || ! is_number "$2"; then
        echo "$me: -s needs a score such as 10 or 7.5 (got '${2-}'); message accepted unscored" >&2
        exit 0
    fi
    limit=$2
    shift 2
fi

if ! command -v spamc >/dev/null 2>&1; then
    echo "$me: spamc not found in PATH; message accepted unscored" >&2
    exit 0
fi

# -c: print "score/required" only; -x: fail instead of answering "0/0"
# when spamd is unreachable; -t: give up well within the plugin time limit.
# Later options win, so the caller's -t replaces ours.
result=$(spamc -c -x -t 20 "$@")
status=$?

# spamc -c exits 0 for ham and 1 for spam; anything else is an error.
score=${result%%/*}
required=${result#*/}
case $result in
    */*) ;;
    *) score= ;;
esac
if [ "$status" -gt 1 ] || ! is_number "$score" || ! is_number "$required" ||
    [ "$required" = 0 ] || [ "$required" = 0.0 ]; then
    echo "$me: no score from spamd (spamc exit $status, output '$result'); message accepted unscored" >&2
    exit 0
fi

# at_least A B: A >= B, compared as numbers (awk, since sh has no floats).
at_least() {
    awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'
}

if [ -n "$limit" ] && at_least "$score" "$limit"; then
    printf 'E550 message looks like spam (score %s) (#5.7.1)\n' "$score"
    exit 0
fi

if at_least "$score" "$required"; then
    verdict=Yes
else
    verdict=No
fi
printf 'HX-Spam-Score: %s\n' "$score"
printf 'HX-Spam-Status: %s, score=%s required=%s\n' "$verdict" "$score" "$required"
if [ "$verdict" = Yes ]; then
    printf 'HX-Spam-Flag: YES\n'
fi
exit 0
