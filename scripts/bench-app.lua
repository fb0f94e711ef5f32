-- wrk request mix for scripts/bench.sh's demo-app case (examples/demo/kit/app.rs served by
-- examples/bench_server.rs app_*): per 10 requests, 4 x GET /api/fast (small JSON),
-- 4 x GET /users/{id} (path parameter, formatted JSON), 1 x GET /api/fail (500),
-- 1 x GET /download (1 MiB streamed in 8 KiB blocks).
local paths = {
  "/api/fast", "/users/1", "/api/fast", "/users/22", "/api/fail",
  "/api/fast", "/users/333", "/api/fast", "/users/4444", "/download",
}
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
