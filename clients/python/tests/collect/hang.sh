#!/bin/bash
# Never ends by itself: writes its own pid and its child's to $CS_TEST_OUT/<session id>.pids.
sleep 600 &
echo "$$ $!" > "$CS_TEST_OUT/$CS_SESSION_ID.pids"
echo "hanging"
wait
