-- GET with a bearer token (scenario 2): BENCH_TOKEN is a valid JWT of the user being read.
dofile(os.getenv("BENCH_LUA_DIR") .. "/summary.lua")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
