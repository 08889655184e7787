#!/usr/bin/perl
# [connection] plugin, persistent: refuses a client address that opened
# more than MAX connections in the last WINDOW seconds.
#
#   [connection]
#   #spp: persistent workers=1 timeout=2s on-failure=skip
#   plugins-examples/connection-rate.pl 30 60
#
# MAX (default 30) and WINDOW (default 60) are the arguments. The counts
# live in the process's memory, which is why it only makes sense
# persistent (use workers=1, so one process sees every connection); run
# classic, it accepts everything. Over the limit the client gets
# `R421 ...` (the reply, then the connection is closed).
#
# It speaks the persistent protocol with Perl's core only: the handshake,
# then requests whose variables are sent as a byte length and the bytes,
# answered by directive lines and `end ID`.

use strict;
use warnings;

my $max    = @ARGV > 0 ? $ARGV[0] : 30;
my $window = @ARGV > 1 ? $ARGV[1] : 60;
die "usage: connection-rate.pl [MAX [WINDOW]]\n"
  unless $max =~ /^\d+$/ && $window =~ /^\d+$/ && $window > 0;

# Classic run: no memory between connections, so no opinion.
exit 0 unless exists $ENV{SPP_PERSISTENT};

binmode STDIN;
binmode STDOUT;
$| = 1;

my %seen;    # address => [times of its recent connections]

my $hello = <STDIN>;
exit 1 unless defined $hello && $hello =~ /^spp-persistent (\d+)\n\z/ && $1 >= 1;
print "spp-persistent 1\n";

while (defined(my $line = <STDIN>)) {
    my ($id, $hook, $session, $count, $size) =
      $line =~ /^request (\S+) (\S+) (\S+) (\d+) (\d+)\n\z/
      or die "connection-rate.pl: unexpected line: $line";
    # The variables: SIZE bytes of LENGTH LF NAME=VALUE LF, COUNT times.
    my $block = '';
    while (length $block < $size) {
        my $got = read(STDIN, $block, $size - length $block, length $block);
        die "connection-rate.pl: request $id ended early\n" unless $got;
    }
    my %env;
    my $at = 0;
    for (1 .. $count) {
        my $lf = index($block, "\n", $at);
        die "connection-rate.pl: bad request $id\n" if $lf < 0;
        my $length = substr($block, $at, $lf - $at);
        my ($name, $value) = split /=/, substr($block, $lf + 1, $length), 2;
        $env{$name} = $value;
        $at = $lf + 1 + $length + 1;
    }
    print answer($hook, $env{TCPREMOTEIP}), "end $id\n";
}

# The directives for one request.
sub answer {
    my ($hook, $ip) = @_;
    return '' unless $hook eq 'connection' && defined $ip && $ip ne '';
    my $now  = time;
    my $list = $seen{$ip} ||= [];
    shift @$list while @$list && $list->[0] <= $now - $window;
    push @$list, $now;
    # Forget idle addresses now and then, so memory stays bounded.
    if (keys %seen > 100_000) {
        for my $a (keys %seen) {
            delete $seen{$a} unless @{ $seen{$a} } && $seen{$a}[-1] > $now - $window;
        }
    }
    return "N\n" if @$list <= $max;
    return "R421 too many connections from your address, try again later (#4.7.0)\n";
}
