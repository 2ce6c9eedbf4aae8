#!/bin/bash
# Sleeps $1 seconds (default 5), then says so.
sleep "${1:-5}"
echo "slept ${1:-5} s"
