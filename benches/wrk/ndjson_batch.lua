-- NDJSON bodies of 1,000 llm_usage events (without event_id: the batch path measures storage,
-- not the duplicate check). Built once per thread.
local lines = {}
for i = 1, 1000 do
  lines[i] = '{"type":"llm_usage","agent":"bench","model":"gpt-5","input_tokens":1200,"cache_read_tokens":800,"output_tokens":300}'
end
wrk.method = "POST"
wrk.path = "/v1/events"
wrk.body = table.concat(lines, "\n") .. "\n"
wrk.headers["Content-Type"] = "application/x-ndjson"
function response(status, headers, body)
  if status ~= 202 then
    print("unexpected status " .. status .. ": " .. body)
    os.exit(1)
  end
end
