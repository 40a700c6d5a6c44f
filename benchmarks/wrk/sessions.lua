-- wrk script: POST /v1/recommend with random sessions (1-20 items from a catalog of CATALOG_SIZE, env var).
-- CATALOG_SIZE=1000000 wrk -t1 -c32 -d20s --latency -s benchmarks/wrk/sessions.lua http://127.0.0.1:8090/v1/recommend
local catalog = tonumber(os.getenv("CATALOG_SIZE") or "10000")
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

function request()
  local n = math.random(1, 20)
  local items = {}
  for i = 1, n do items[i] = math.random(0, catalog - 1) end
  return wrk.format("POST", nil, headers, '{"session": [' .. table.concat(items, ",") .. '], "k": 21}')
end
