#!/usr/bin/env perl
#
# rbl.pl - refuse clients listed in DNS block lists (DNSBLs)
#
# Hook:      [mail] or [rcpt]
#            (at [connection] an 'E' would only replace the greeting and the
#            session would go on; there, use -m to mark the client and let a
#            later hook decide)
#
# smtpplugins:
#     [rcpt]
#     plugins-examples/rbl.pl -z zen.example
#   several lists, a resolver of its own, a shorter time limit:
#     plugins-examples/rbl.pl -z zen.example -z bl.example.net -s 127.0.0.1:53 -t 3
#
# Arguments:
#   -z ZONE    a DNSBL zone to look the client up in; give -z once per zone
#              (at least once). Zones are asked in order; the first that
#              lists the client decides.
#   -s SERVER  ask this DNS server, as IP, IP:PORT or [IPv6]:PORT (port 53
#              by default), with a small DNS client of its own over UDP.
#              Without -s the system's resolver is asked (getaddrinfo, so
#              /etc/resolv.conf and nsswitch.conf apply).
#   -t SECONDS how long to wait for one answer from -s SERVER; default 5.
#              (The system resolver keeps its own timeouts.) The server's
#              plugin time limit (30 s by default) covers the whole run.
#   -m         mark only: never refuse, set the variable and add a header
#              (below), for a later hook or the queue program to act on.
#
# How a client is looked up: the IPv4 address 192.0.2.7 becomes the name
# 7.2.0.192.ZONE; an IPv6 address is written out in full and its 32 hex
# digits reversed, dot-separated (2001:db8::1 becomes
# 1.0.0.0. ... .8.b.d.0.1.0.0.2.ZONE); an IPv4-mapped IPv6 address
# (::ffff:192.0.2.7) counts as IPv4. The client is listed when the zone
# answers with an IPv4 address in 127.0.0.0/8 outside 127.255.255.0/24,
# the range some lists use for "query refused" codes. No such name
# (NXDOMAIN) or no address means not listed.
#
# Reads:
#   TCPREMOTEIP  client address
#   RELAYCLIENT  if present (even empty), the client may relay (local
#                networks, authenticated users): never looked up
#   RBL_LISTED   the result of an earlier run in this connection (see
#                below): if set, no lookup is made again
#
# Prints:
#   SRBL_LISTED=ZONE   after a lookup, the zone that lists the client, or
#                      nothing after the '=' when none does. The server keeps
#                      the variable for the rest of the connection, so a
#                      plugin listed under [rcpt] looks the client up once
#                      per connection, not once per recipient; later plugins
#                      and the queue program see it.
#   E554 sorry, your address 192.0.2.7 is listed in ZONE (#5.7.1)
#                      when the client is listed (not with -m). This refuses
#                      the MAIL or RCPT; every later one is refused the same
#                      way without a new lookup.
#   HX-RBL: 192.0.2.7 is listed in ZONE
#                      with -m, after the lookup that found the client listed:
#                      a header in the message.
#
# Failure policy: a lookup that fails (timeout, SERVFAIL, REFUSED, an
# answer that makes no sense) counts as "not listed in that zone" and is
# logged, so a block list that is down does not stop mail. Bad arguments are
# logged and nothing is refused. Exit status: always 0.
#
# Test by hand (192.0.2.7 is not listed anywhere; 127.0.0.2 is the test
# entry every DNSBL lists):
#     env -i TCPREMOTEIP=127.0.0.2 plugins-examples/rbl.pl -z zen.example -s 127.0.0.1
#
# Perl core modules only: Socket, IO::Socket::IP, IO::Select, Time::HiRes.

use strict;
use warnings;

use Getopt::Long qw(GetOptionsFromArray :config bundling no_ignore_case);
use IO::Select;
use IO::Socket::IP;
use Socket qw(AF_INET AF_INET6 SOCK_STREAM inet_pton inet_ntop unpack_sockaddr_in getaddrinfo);
use Time::HiRes qw(time);

my $DEFAULT_TIMEOUT = 5;

sub logline { print STDERR "rbl.pl: @_\n" }

# ---------------------------------------------------------------------------
# The name to look up

# The labels of the client address reversed, without the zone; undef for
# something that is not an IP address.
sub reversed_address {
    my ($ip) = @_;
    $ip =~ s/\A::ffff:(?=[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+\z)//i;
    if (my $packed = inet_pton(AF_INET, $ip)) {
        return join '.', reverse unpack('C4', $packed);
    }
    if (my $packed = inet_pton(AF_INET6, $ip)) {
        return join '.', reverse split //, unpack('H32', $packed);
    }
    return undef;
}

# True for an answer that means "listed".
sub listing_address {
    my ($packed) = @_;
    my @octets = unpack('C4', $packed);
    return 0 if $octets[0] != 127;
    return 0 if $octets[1] == 255 && $octets[2] == 255;
    return 1;
}

# ---------------------------------------------------------------------------
# A minimal DNS client: one A query over UDP, RFC 1035 section 4

# The query message for NAME, class IN, type A, recursion desired.
sub dns_query {
    my ($id, $name) = @_;
    my $message = pack('n6', $id, 0x0100, 1, 0, 0, 0);
    for my $label (split /\./, $name) {
        die "the name $name has an empty or over-long label\n"
            if length($label) == 0 || length($label) > 63;
        $message .= pack('C/a*', $label);
    }
    return $message . pack('Cn2', 0, 1, 1);
}

# The offset just past the (possibly compressed) name at OFFSET.
sub skip_name {
    my ($message, $offset) = @_;
    while (1) {
        die "answer ends inside a name\n" if $offset >= length $message;
        my $length = ord substr($message, $offset, 1);
        return $offset + 1 if $length == 0;
        return $offset + 2 if ($length & 0xC0) == 0xC0;    # a pointer
        die "answer has a bad label\n" if $length & 0xC0;
        $offset += 1 + $length;
    }
}

# The IPv4 addresses (packed) an answer gives for the query it answers;
# undef when the answer is for another query; dies on an error reply.
sub dns_answer {
    my ($query, $answer) = @_;
    my $question = substr($query, 12);
    return undef if length($answer) < length($query);
    return undef if substr($answer, 0, 2) ne substr($query, 0, 2);
    return undef if substr($answer, 12, length $question) ne $question;
    my ($flags, $qdcount, $ancount) = unpack('x2 n n n', $answer);
    return undef unless $flags & 0x8000;    # not a response
    my $rcode = $flags & 0x000F;
    return [] if $rcode == 3;               # NXDOMAIN: no such name
    die "the server answered with error code $rcode\n" if $rcode != 0;
    die "the answer is truncated\n" if $flags & 0x0200;

    my @addresses;
    my $offset = length $query;
    for (1 .. $ancount) {
        $offset = skip_name($answer, $offset);
        die "answer ends inside a record\n" if $offset + 10 > length $answer;
        my ($type, $class, $ttl, $rdlength) = unpack("x$offset n n N n", $answer);
        $offset += 10;
        die "answer ends inside a record\n" if $offset + $rdlength > length $answer;
        # Records of other types (a CNAME leading to the A record) are skipped.
        push @addresses, substr($answer, $offset, 4)
            if $type == 1 && $class == 1 && $rdlength == 4;
        $offset += $rdlength;
    }
    return \@addresses;
}

# The IPv4 addresses (packed) of NAME, asked from HOST:PORT over UDP.
sub lookup_with_server {
    my ($name, $host, $port, $timeout) = @_;
    my $socket = IO::Socket::IP->new(PeerHost => $host, PeerPort => $port, Proto => 'udp')
        or die "cannot reach $host port $port: $@\n";
    my $query = dns_query(int rand 65536, $name);
    defined $socket->send($query) or die "cannot send to $host port $port: $!\n";
    my $select = IO::Select->new($socket);
    my $deadline = time + $timeout;
    while (1) {
        my $left = $deadline - time;
        die "no answer from $host port $port within $timeout s\n"
            if $left <= 0 || !$select->can_read($left);
        my $answer;
        # A refused datagram (ICMP port unreachable) shows up as a failed recv.
        defined $socket->recv($answer, 4096) or die "no answer from $host port $port: $!\n";
        my $addresses = dns_answer($query, $answer);
        return @$addresses if defined $addresses;
        # Anything else is a stray datagram: keep waiting for ours.
    }
}

# The IPv4 addresses (packed) of NAME from the system's resolver.
sub lookup_with_system {
    my ($name) = @_;
    my ($error, @results) = getaddrinfo($name, undef, { family => AF_INET, socktype => SOCK_STREAM });
    if ($error) {
        # No such name, or a name without addresses: not listed.
        return () if $error == Socket::EAI_NONAME()
            || (defined &Socket::EAI_NODATA && $error == Socket::EAI_NODATA());
        die "$error\n";
    }
    return map { (unpack_sockaddr_in($_->{addr}))[1] } @results;
}

# ---------------------------------------------------------------------------
# Settings

# (host, port) from -s, or () when it makes no sense.
sub parse_server {
    my ($text) = @_;
    my ($host, $port);
    if ($text =~ /\A\[([^\]]+)\](?::([0-9]+))?\z/) {
        ($host, $port) = ($1, $2);
    } elsif ($text =~ /\A([^:]+)(?::([0-9]+))?\z/) {
        ($host, $port) = ($1, $2);
    } else {
        $host = $text;    # a bare IPv6 address
    }
    $port //= 53;
    return () unless inet_pton(AF_INET, $host) || inet_pton(AF_INET6, $host);
    return () unless $port >= 1 && $port <= 65535;
    return ($host, $port);
}

sub main {
    my (@zones, $server, $mark);
    my $timeout = $DEFAULT_TIMEOUT;
    local $SIG{__WARN__} = sub { logline("@_" =~ s/\n\z//r) };
    if (!GetOptionsFromArray(\@ARGV, 'z=s' => \@zones, 's=s' => \$server,
                             't=s' => \$timeout, 'm' => \$mark) || @ARGV) {
        logline("usage: rbl.pl -z ZONE [-z ZONE...] [-s SERVER[:PORT]] [-t SECONDS] [-m]; nothing checked");
        return;
    }
    if (!@zones) {
        logline('no zone given (-z ZONE); nothing checked');
        return;
    }
    if ($timeout !~ /\A[0-9]+(?:\.[0-9]+)?\z/ || $timeout <= 0) {
        logline("-t wants a number of seconds, not '$timeout'; using $DEFAULT_TIMEOUT");
        $timeout = $DEFAULT_TIMEOUT;
    }
    my @resolver;
    if (defined $server) {
        @resolver = parse_server($server);
        if (!@resolver) {
            logline("-s wants IP, IP:PORT or [IPv6]:PORT, not '$server'; nothing checked");
            return;
        }
    }

    return if exists $ENV{RELAYCLIENT};
    my $ip = $ENV{TCPREMOTEIP} // '';

    my $listed = $ENV{RBL_LISTED};
    if (!defined $listed) {
        my $reversed = reversed_address($ip);
        if (!defined $reversed) {
            logline("TCPREMOTEIP='$ip' is not an IP address; nothing checked");
            return;
        }
        $listed = '';
        for my $zone (@zones) {
            my $name = "$reversed.$zone";
            my @addresses = eval {
                @resolver ? lookup_with_server($name, @resolver, $timeout)
                          : lookup_with_system($name);
            };
            if ($@) {
                logline("cannot look up $name, taken as not listed: " . ($@ =~ s/\n\z//r));
                next;
            }
            my @listing = grep { listing_address($_) } @addresses;
            for my $other (grep { !listing_address($_) } @addresses) {
                logline("$name: ignored the answer " . inet_ntop(AF_INET, $other));
            }
            if (@listing) {
                $listed = $zone;
                logline("$ip is listed in $zone (" . inet_ntop(AF_INET, $listing[0]) . ')');
                last;
            }
        }
        print "SRBL_LISTED=$listed\n";
        print "HX-RBL: $ip is listed in $listed\n" if $mark && $listed ne '';
    }
    print "E554 sorry, your address $ip is listed in $listed (#5.7.1)\n"
        if !$mark && $listed ne '';
}

main();
exit 0;
