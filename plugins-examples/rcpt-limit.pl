#!/usr/bin/env perl
#
# rcpt-limit.pl - limit the number of recipients of one message
#
# Hook:      [rcpt]
#
# smtpplugins (spp-smtpd splits a line without a leading ':' into words, so
# the limit can be given as an argument):
#     [rcpt]
#     plugins-examples/rcpt-limit.pl 100
#
# Argument:  N, the most recipients one transaction may have; default 50.
#            An argument that is not a whole number of at least 1 is logged
#            and the default is used.
#
# Reads:     SMTPRCPTCOUNT   recipients already accepted in this transaction,
#                            not counting the one being asked for now
#
# Prints:    nothing while fewer than N recipients were accepted, otherwise
#                E452 too many recipients (#4.5.3)
#            which refuses this recipient. 452 is temporary on purpose: this
#            is the reply RFC 5321 defines for it, and a client that gets it
#            delivers the message to the recipients accepted so far and sends
#            the rest in a later transaction, so no mail is lost. (RFC 5321
#            also says a server should take at least 100 recipients.)
#
# Exit status: always 0. Problems are logged on stderr: a bad argument falls
# back to the default limit, and a missing or malformed SMTPRCPTCOUNT lets the
# recipient through, so a broken setup never blocks mail.
#
# Test by hand:
#     env -i SMTPRCPTCOUNT=1 plugins-examples/rcpt-limit.pl 2    # nothing
#     env -i SMTPRCPTCOUNT=2 plugins-examples/rcpt-limit.pl 2    # E452 ...

use strict;
use warnings;

my $DEFAULT_LIMIT = 50;

sub logline { print STDERR "rcpt-limit.pl: @_\n" }

my $limit = $DEFAULT_LIMIT;
if (@ARGV) {
    my $arg = shift @ARGV;
    if ($arg =~ /\A[0-9]+\z/ && $arg >= 1) {
        $limit = $arg;
    } else {
        logline("the limit must be a whole number of at least 1, not '$arg'; using $DEFAULT_LIMIT");
    }
    logline("extra arguments ignored: @ARGV") if @ARGV;
}

my $count = $ENV{SMTPRCPTCOUNT};
if (!defined $count) {
    logline('SMTPRCPTCOUNT is not set; list this plugin under [rcpt]');
    exit 0;
}
if ($count !~ /\A[0-9]+\z/) {
    logline("SMTPRCPTCOUNT='$count' is not a number; recipient not checked");
    exit 0;
}

print "E452 too many recipients (#4.5.3)\n" if $count >= $limit;
exit 0;
