#!/usr/bin/perl
# Example legacy perl task: greets every argument, the last line is the result.
use strict;
use warnings;

print "perl sees " . scalar(@ARGV) . " arguments\n";
print "hello " . join(" ", @ARGV) . "\n";
