-- One llm_usage event per request, each with its own event_id (thread id + counter).
local thread_id = 0
local counter = 0
function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end
function init(args)
  counter = 0
end
function request()
  counter = counter + 1
  local body = string.format(
    '{"type":"llm_usage","event_id":"w%d-%d-%d","agent":"bench","model":"gpt-5","input_tokens":1200,"cache_read_tokens":800,"output_tokens":300}',
    tid, counter, os.time())
  return wrk.format("POST", "/v1/events", {["Content-Type"] = "application/json"}, body)
end
function response(status, headers, body)
  if status ~= 202 then
    print("unexpected status " .. status .. ": " .. body)
    os.exit(1)
  end
end
