-- One file_write event per request: each one makes a span, so this drives the span exporter.
wrk.method = "POST"
wrk.path = "/v1/events"
wrk.body = '{"type":"file_write","bytes":4096,"path":"src/main.rs"}'
wrk.headers["Content-Type"] = "application/json"
function response(status, headers, body)
  if status ~= 202 then
    print("unexpected status " .. status .. ": " .. body)
    os.exit(1)
  end
end
