#!/bin/sh
#
# check-sender.sh - refuse envelope senders that cannot be answered
#
# Hook:      [mail]   (runs for MAIL FROM, before the server's badmailfrom)
#
# smtpplugins:
#     [mail]
#     plugins-examples/check-sender.sh
#   or, with a list of refused senders and no bounces accepted:
#     plugins-examples/check-sender.sh -f control/badsenders -n
#
# Arguments:
#   -f FILE  refuse senders matching a line of FILE (relative to the home).
#            One shell pattern per line (* ? [...]), matched against the
#            whole address without regard to ASCII case, e.g.
#                *@*.example.com      every subdomain of example.com
#                noreply-*@example.net
#                bounce?@example.org
#            Blanks around a pattern are ignored; empty lines and lines
#            starting with '#' are skipped. A missing file is logged and
#            nothing is refused because of it. (control/badmailfrom, which
#            the server reads itself, takes exact addresses and @domain.)
#   -n       refuse the null sender (MAIL FROM:<>, used by bounces). Only for
#            a server whose addresses never send mail, so that no bounce can
#            be genuine: RFC 5321 requires mail from <> to be accepted.
#
# Reads:
#   SMTPMAILFROM  envelope sender without <>; empty for bounces
#   RELAYCLIENT   if present (even empty), the client may relay (local
#                 networks, authenticated users): its software may use local
#                 forms such as a bare user name, so only -f and -n apply
#
# Prints nothing for an acceptable sender, or one of
#   E553 sorry, the sender address needs a domain (#5.1.7)
#       no '@', or nothing after it
#   E553 sorry, the sender address has an empty local part (#5.1.7)
#       nothing before the '@'
#   E553 sorry, the sender domain is malformed (#5.1.7)
#       the domain is not an address literal ([192.0.2.1], [IPv6:...]) and
#       is not a name of two or more labels made of letters, digits and
#       hyphens (no label empty, none starting or ending with a hyphen, at
#       most 255 characters); bytes beyond ASCII are let through for
#       SMTPUTF8 domains. A domain of one label (user@localhost) cannot be
#       reached from another host, so it counts as malformed too.
#   E550 sorry, mail from this sender is refused here (#5.7.1)
#       the sender matches a pattern of the -f file
#   E550 sorry, bounces are not accepted here (#5.7.1)
#       the null sender, with -n
# The checks run in this order; the first that refuses wins. An 'E' at MAIL
# refuses only this MAIL: the client may try another sender.
#
# Exit status: always 0; problems (bad arguments, unreadable file) are
# logged on stderr and refuse nothing.
#
# Test by hand, from the server's home directory:
#     env -i SMTPMAILFROM=someone plugins-examples/check-sender.sh            # E553 ...
#     env -i SMTPMAILFROM=a@example.org plugins-examples/check-sender.sh      # nothing
#     env -i SMTPMAILFROM= plugins-examples/check-sender.sh -n                # E550 ...
#
# Besides the shell's built-ins it runs only tr, at most three times per MAIL.

log() {
    printf 'check-sender.sh: %s\n' "$*" >&2
}

refuse() {
    printf 'E%s\n' "$1"
    exit 0
}

list=
no_bounces=false
while getopts f:n option 2>/dev/null; do
    case $option in
        f) list=$OPTARG ;;
        n) no_bounces=true ;;
        *) log "usage: check-sender.sh [-f FILE] [-n]; bad arguments ignored" ;;
    esac
done

if [ -z "${SMTPMAILFROM+set}" ]; then
    log "SMTPMAILFROM is not set; list this plugin under [mail]"
    exit 0
fi
sender=$SMTPMAILFROM

if [ -z "$sender" ]; then
    if $no_bounces; then
        refuse '550 sorry, bounces are not accepted here (#5.7.1)'
    fi
    exit 0
fi

if [ -z "${RELAYCLIENT+set}" ]; then
    case $sender in
        *@*) ;;
        *) refuse '553 sorry, the sender address needs a domain (#5.1.7)' ;;
    esac
    # The domain follows the last '@': a quoted local part may contain one.
    domain=${sender##*@}
    local_part=${sender%@*}
    [ -n "$domain" ] || refuse '553 sorry, the sender address needs a domain (#5.1.7)'
    [ -n "$local_part" ] || refuse '553 sorry, the sender address has an empty local part (#5.1.7)'

    malformed='553 sorry, the sender domain is malformed (#5.1.7)'
    case $domain in
        \[*\])
            # An address literal: what is between the brackets is left to
            # the server's parser, only the characters are checked here.
            literal=${domain#\[}
            literal=${literal%\]}
            case $literal in
                '' | *[!0-9A-Za-z.:]*) refuse "$malformed" ;;
            esac
            ;;
        *)
            [ "${#domain}" -le 255 ] || refuse "$malformed"
            case $domain in
                *.*) ;;
                *) refuse "$malformed" ;;   # one label
            esac
            case $domain in
                .* | *. | *..* | -* | *- | *.-* | *-.*) refuse "$malformed" ;;
            esac
            # Whatever is left after removing the characters a name may
            # contain (bytes beyond ASCII included) must be nothing.
            rest=$(printf '%s' "$domain" | LC_ALL=C tr -d 'A-Za-z0-9.\200-\377-')
            [ -z "$rest" ] || refuse "$malformed"
            ;;
    esac
fi

if [ -n "$list" ]; then
    # The whole list in lower case, read once.
    if ! patterns=$(LC_ALL=C tr 'A-Z' 'a-z' 2>/dev/null < "$list"); then
        log "cannot read the sender list $list; no sender refused because of it"
        exit 0
    fi
    address=$(printf '%s' "$sender" | LC_ALL=C tr 'A-Z' 'a-z')
    blanks=' 	'    # a space and a TAB
    while IFS= read -r pattern; do
        pattern=${pattern#"${pattern%%[!$blanks]*}"}
        pattern=${pattern%"${pattern##*[!$blanks]}"}
        case $pattern in
            '' | '#'*) continue ;;
        esac
        # Unquoted on purpose: the line is a pattern, not a string.
        # shellcheck disable=SC2254
        case $address in
            $pattern) refuse '550 sorry, mail from this sender is refused here (#5.7.1)' ;;
        esac
    done <<EOF
$patterns
EOF
fi

exit 0
