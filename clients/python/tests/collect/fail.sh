#!/bin/bash
echo "partial output"
echo "boom: $*" >&2
exit 3
