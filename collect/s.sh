#!/bin/sh
# Example legacy shell task: reports the arguments it was given and the host's uptime.
set -e
echo "s.sh running on $(hostname) for ${CS_CLUSTER_TYPE:-?}/${CS_TASK_NAME:-?}"
echo "args: $*"
