-- POST /v1/auth/login (scenario 3). Run with as many wrk threads as connections (-tN -cN), so each
-- thread is one client: the per-client counts printed at the end show whether the Argon2id gate is fair.
dofile(os.getenv("BENCH_LUA_DIR") .. "/summary.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"email":"%s","password":"%s"}', os.getenv("BENCH_EMAIL"), os.getenv("BENCH_PASSWORD"))

local threads = {}
function setup(thread) table.insert(threads, thread) end

function init(args)
  ok, rejected, other = 0, 0, 0
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1
  elseif status == 503 or status == 429 then rejected = rejected + 1
  else other = other + 1 end
end

function extra_fields()
  local per_client, totals = {}, {0, 0, 0}
  for i, t in ipairs(threads) do
    per_client[i] = tostring(t:get("ok"))
    totals[1] = totals[1] + t:get("ok")
    totals[2] = totals[2] + t:get("rejected")
    totals[3] = totals[3] + t:get("other")
  end
  return string.format('"ok_per_client":[%s],"ok":%d,"rejected":%d,"other":%d',
                       table.concat(per_client, ","), totals[1], totals[2], totals[3])
end
