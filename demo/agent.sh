#!/bin/sh
# A demo agent for the compose stack: it burns some CPU in short-lived children, writes files,
# and reports LLM usage, runs and tasks to the costmeter that runs it (costmeter exec).
url=${COSTMETER_URL:-http://127.0.0.1:8000}
run=0
while :; do
  run=$((run + 1))
  curl -s -o /dev/null "$url/v1/events" -H 'Content-Type: application/json' \
    -d "{\"type\":\"run_start\",\"run_id\":\"demo-$run\",\"agent\":\"demo\"}"
  for task in 1 2 3; do
    id="demo-$run-$task"
    curl -s -o /dev/null "$url/v1/events" -H 'Content-Type: application/json' \
      -d "{\"type\":\"task_start\",\"task_id\":\"$id\",\"run_id\":\"demo-$run\",\"task_type\":\"build\",\"agent\":\"demo\"}"
    timeout 1 sh -c 'while :; do :; done'
    dd if=/dev/zero of=/tmp/demo.out bs=64k count=16 2>/dev/null
    curl -s -o /dev/null "$url/v1/events" -H 'Content-Type: application/json' \
      -d "{\"type\":\"llm_usage\",\"agent\":\"demo\",\"model\":\"claude-sonnet-4-5\",\"task_id\":\"$id\",\"run_id\":\"demo-$run\",\"input_tokens\":12000,\"cache_read_tokens\":8000,\"output_tokens\":900}"
    curl -s -o /dev/null "$url/v1/events" -H 'Content-Type: application/json' \
      -d "{\"type\":\"task_end\",\"task_id\":\"$id\",\"run_id\":\"demo-$run\",\"task_type\":\"build\",\"result\":\"success\"}"
  done
  curl -s -o /dev/null "$url/v1/events" -H 'Content-Type: application/json' \
    -d "{\"type\":\"run_end\",\"run_id\":\"demo-$run\",\"result\":\"success\"}"
  sleep 2
done
