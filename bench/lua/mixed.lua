-- Scenario 4: 90 % GET /v1/users/{id}, 10 % PATCH of the same resource (a name change, no If-Match),
-- over the ids in BENCH_IDS_FILE (one per line, 1 000+ users), as an admin (BENCH_TOKEN).
dofile(os.getenv("BENCH_LUA_DIR") .. "/summary.lua")
local token = os.getenv("BENCH_TOKEN")
local ids = {}
for line in io.lines(os.getenv("BENCH_IDS_FILE")) do ids[#ids + 1] = line end

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("thread_no", counter)
end

function init(args)
  math.randomseed(os.time() * 100 + (thread_no or 0))
  get_headers = {["Authorization"] = "Bearer " .. token}
  patch_headers = {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/merge-patch+json"}
  writes = 0
end

function request()
  local path = "/v1/users/" .. ids[math.random(#ids)]
  if math.random(10) == 1 then
    writes = writes + 1
    return wrk.format("PATCH", path, patch_headers, string.format('{"firstName":"Bench%d"}', math.random(1000000)))
  end
  return wrk.format("GET", path, get_headers)
end
