#!/bin/sh
#
# check-helo.sh - refuse HELO/EHLO arguments that cannot name a host
#
# Hook:      [helo]   (runs for both HELO and EHLO, before the server replies)
#
# smtpplugins:
#     [helo]
#     plugins-examples/check-helo.sh
#
# Reads:     SMTPHELOHOST   the raw HELO/EHLO argument; may be empty and may
#                           end in blanks. The server sets it before the hook.
#
# Prints:    nothing when the argument looks acceptable (the server goes on
#            with its normal 250 reply), or exactly one line
#                E501 syntax error in HELO: a host name is required (#5.5.4)
#            for an empty (or blank) argument, or
#                E501 syntax error in HELO: an address literal needs brackets: [192.0.2.1] (#5.5.4)
#            for a bare IPv4 address in dotted-decimal form. RFC 5321 wants
#            either a domain name or an address literal in brackets, and
#            RFC 1123 notes that a host name never has the form #.#.#.#.
#            An `E` line refuses the command: the client sees the text after
#            the `E` and may try HELO/EHLO again.
#
# Exit status: always 0. The server ignores the exit status of a plugin
# (apart from 120, "can't execute"), so what counts is the output above.
#
# Test by hand, from the server's home directory:
#     env -i SMTPHELOHOST='' plugins-examples/check-helo.sh           # E501 ...
#     env -i SMTPHELOHOST=192.0.2.1 plugins-examples/check-helo.sh    # E501 ...
#     env -i SMTPHELOHOST=mx.example.test plugins-examples/check-helo.sh  # nothing
#
# Only the POSIX shell and its built-ins are used: no external programs, no
# DNS lookups, so it costs about one shell start per HELO.

# If the plugin is listed under a hook that runs before any HELO, the variable
# does not exist yet: do not refuse anything, just say so in the log.
if [ -z "${SMTPHELOHOST+set}" ]; then
    echo "check-helo.sh: SMTPHELOHOST is not set; list this plugin under [helo]" >&2
    exit 0
fi

blanks=' 	'    # a space and a TAB

# Strip leading and trailing blanks: "HELO host  " keeps its trailing spaces
# in SMTPHELOHOST, and a name made only of blanks is as good as no name.
helo=$SMTPHELOHOST
helo=${helo#"${helo%%[!$blanks]*}"}
helo=${helo%"${helo##*[!$blanks]}"}

if [ -z "$helo" ]; then
    printf '%s\n' 'E501 syntax error in HELO: a host name is required (#5.5.4)'
    exit 0
fi

# Dotted-decimal form: four non-empty runs of digits separated by dots.
# The first pattern that matches wins, so the checks go from "clearly not"
# to "exactly four labels". "[192.0.2.1]" contains brackets and is fine.
case $helo in
    *[!0-9.]* | .* | *. | *..*)
        ;;      # other characters, or an empty label: not an IPv4 address
    *.*.*.*.*)
        ;;      # five or more labels
    *.*.*.*)
        # $helo is only digits and dots here, so it is safe to echo back.
        printf '%s\n' "E501 syntax error in HELO: an address literal needs brackets: [$helo] (#5.5.4)"
        ;;
esac

exit 0
