-- wrk script of `make bench` (scripts/bench/run.py drives it).
-- wrk -t1 -cC -dDs -s wrk.lua URL -- METHOD BODY_FILE TOKEN_FILE LIMIT DONE_FILE
--   METHOD      GET or POST
--   BODY_FILE   request body ("-" for none); the first "__UNIQUE__" in it is replaced by a
--               per-request value (feedback items must differ to be stored)
--   TOKEN_FILE  one pre-signed JWT per line ("-" for none); each is sent once, in order
--   LIMIT       stop after this many responses (0: run for the duration)
--   DONE_FILE   written when LIMIT is reached: the driver then sends SIGINT so wrk reports at once
--               (wrk itself would sleep out its -d duration)
-- Throughput is responses / (last response - first request), timed here (LuaJIT ffi,
-- CLOCK_MONOTONIC), not wrk's run duration, which includes the wait for SIGINT.
-- Prints one line "BENCHJSON {...}" with the counts and latency percentiles (microseconds).

local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
           int clock_gettime(int clk, bench_timespec *ts); ]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  thread:set("nthreads", 0)
  table.insert(threads, thread)
end

local method, prefix, suffix, limit, done_file
local tokens = {}
local sent = 0
responses = 0
non2xx = 0
reused = 0
first_us = 0
last_us = 0

function init(args)
  method = args[1] or "POST"
  local body_file, token_file = args[2] or "-", args[3] or "-"
  limit = tonumber(args[4] or "0") or 0
  done_file = args[5]
  prefix = nil
  if body_file ~= "-" then
    local f = assert(io.open(body_file, "rb"))
    local body = f:read("*a")
    f:close()
    local s, e = body:find("__UNIQUE__", 1, true)
    if s then
      prefix, suffix = body:sub(1, s - 1), body:sub(e + 1)
    else
      prefix = body
    end
  end
  if token_file ~= "-" then
    for line in io.lines(token_file) do
      if #line > 0 then tokens[#tokens + 1] = line end
    end
  end
end

function request()
  sent = sent + 1
  if sent == 1 then first_us = now_us() end
  local headers = {}
  if prefix then headers["Content-Type"] = "application/json" end
  if #tokens > 0 then
    local i = sent
    if i > #tokens then i = #tokens; reused = reused + 1 end -- a replay: the service must refuse it
    headers["Authorization"] = "Bearer " .. tokens[i]
  end
  local body = prefix
  if suffix then body = prefix .. "bench-" .. tid .. "-" .. sent .. "-" .. os.time() .. suffix end
  return wrk.format(method, nil, headers, body)
end

function response(status, headers, body)
  if limit > 0 and responses >= limit then return end -- in flight when the limit was reached
  responses = responses + 1
  last_us = now_us()
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
  if limit > 0 and responses >= limit then
    if done_file then
      local f = io.open(done_file, "w")
      if f then f:write("done\n"); f:close() end
    end
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local n2, resp, reuse, first, last = 0, 0, 0, nil, 0
  for _, t in ipairs(threads) do
    n2 = n2 + t:get("non2xx")
    resp = resp + t:get("responses")
    reuse = reuse + t:get("reused")
    local f, l = t:get("first_us"), t:get("last_us")
    if f > 0 and (first == nil or f < first) then first = f end
    if l > last then last = l end
  end
  local span = 0
  if first and last > first then span = last - first end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "span_us": %d, "bytes": %d, "responses": %d, "non2xx": %d, ' ..
    '"tokens_reused": %d, "err_connect": %d, "err_read": %d, "err_write": %d, "err_timeout": %d, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, span, summary.bytes, resp, n2, reuse, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    latency.mean))
end
