#!/bin/bash
# Writes its arguments, one a line, to $CS_TEST_OUT/<session id>.argv, then says how many.
printf "%s\n" "$@" > "$CS_TEST_OUT/$CS_SESSION_ID.argv"
echo "recorded $# args"
