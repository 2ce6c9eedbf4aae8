#!/bin/sh
# Prints a numbered line with its arguments every 0.2 s for a minute: a run to watch and kill.
i=1
while [ "$i" -le 300 ]; do
    echo "tick $i $*"
    i=$((i + 1))
    sleep 0.2
done
