/* speed_script.c - the Lua script that writes one micro-batch atomically (see README "Write path"). */
#include "speed.h"

/*
 * The part of a micro-batch's MULTI/EXEC that needs Lua (see README "Write path"): HINCRBY whose
 * int64 overflow must become "overflow" instead of an error, and min/max that compare with the
 * current value. It runs first inside the transaction; the fences are checked before MULTI under
 * WATCH, and the other writes of the batch are plain commands in the same transaction.
 * ARGV (no KEYS; every key name is built in C by lam_store):
 *  1 dedup sessions zset (lam:dedup:@sessions), 2 ng, then ng dedup record strings new in this batch
 *    (lam:dedup:@{slot}:{token}:{shard}): each replaced when it is of another type, so the ZADD/APPENDs
 *    after this script cannot fail; nh (0 or 1), then the slot hash (lam:dedup:@{slot}:{token}) new in
 *    this batch (ids over the filters' budget), replaced when it is not a hash
 *  then nk, then nk x (hash key, nc, nm, nc x (field, delta), nm x (op, field, value)):
 *       delta: HINCRBY key field delta (int64 overflow -> "overflow")
 *       op o: HSET field "overflow"   n: HSET field value if value < current (min)   x: ... > current (max)
 *       (the min/max fields of one key are read with one HMGET and written with one HSET)
 * Returns 0. No command in it can fail (short of Redis itself failing).
 */
const char speed_script_lua[] =
    "local A = ARGV\n"
    "local call, pcall, unpack, tonumber = redis.call, redis.pcall, unpack, tonumber\n"
    "local function guard(k, want)\n"
    "  local dt = call('TYPE', k)\n"
    "  dt = type(dt) == 'table' and dt.ok or dt\n"
    "  if dt ~= want and dt ~= 'none' then call('DEL', k) end\n"
    "end\n"
    "guard(A[1], 'zset')\n"
    "local ng = tonumber(A[2])\n"
    "for j = 3, 2 + ng do guard(A[j], 'string') end\n"
    "local nh = tonumber(A[3 + ng])\n"
    "for j = 4 + ng, 3 + ng + nh do guard(A[j], 'hash') end\n"
    "local i = 4 + ng + nh\n"
    "local function lt(a, b)\n"
    "  local an, bn = a:byte(1) == 45, b:byte(1) == 45\n"
    "  if an ~= bn then return an end\n"
    "  if a == b then return false end\n"
    "  local r\n"
    "  if #a ~= #b then r = #a < #b else r = a < b end\n"
    "  if an then return not r end\n"
    "  return r\n"
    "end\n"
    "local nk = tonumber(A[i]); i = i + 1\n"
    "for k = 1, nk do\n"
    "  local key, nc, nm = A[i], tonumber(A[i + 1]), tonumber(A[i + 2])\n"
    "  i = i + 3\n"
    "  for j = i, i + 2 * nc - 1, 2 do\n"
    "    local ok = pcall('HINCRBY', key, A[j], A[j + 1])\n"
    "    if type(ok) == 'table' and ok.err then call('HSET', key, A[j], 'overflow') end\n"
    "  end\n"
    "  i = i + 2 * nc\n"
    "  if nm > 0 then\n"
    "    local f = {}\n"
    "    for m = 1, nm do f[m] = A[i + 3 * m - 2] end\n"
    "    local v = call('HMGET', key, unpack(f))\n"
    "    local w, nw = {}, 0\n"
    "    for m = 1, nm do\n"
    "      local j = i + 3 * m - 3\n"
    "      local op, b, c = A[j], A[j + 2], v[m]\n"
    "      if op == 'o' then b = 'overflow' end\n"
    "      if op == 'o' or not c or (c ~= 'overflow' and ((op == 'n' and lt(b, c)) or (op == 'x' and lt(c, b)))) then\n"
    "        w[nw + 1] = f[m]; w[nw + 2] = b; nw = nw + 2\n"
    "      end\n"
    "    end\n"
    "    if nw > 0 then call('HSET', key, unpack(w)) end\n"
    "    i = i + 3 * nm\n"
    "  end\n"
    "end\n"
    "return 0\n";

/*
 * The fences (README "Write path"), run right after WATCH of the offsets hash, lam:batch:current and
 * the fence key, before MULTI. ARGV: 1 fence key  2 lam:batch:current  3 run the batch was filtered
 * with  4 offsets hash  5.. (partition, stored offset we expect or "") pairs. When a fence fails it
 * SETs the fence key, a watched key, so the EXEC that follows writes nothing. pcall: a key of an
 * unexpected type must fail the fence, not raise (which would leave the transaction unfenced).
 * Returns {0} passed, {1, run} lam:batch:current moved, {2, partition, stored} offsets moved,
 * {3} a key of an unexpected type.
 */
const char speed_fence_lua[] =
    "local A = ARGV\n"
    "local function fail(r) redis.call('SET', A[1], '1') return r end\n"
    "local g = redis.pcall('GET', A[2])\n"
    "if type(g) == 'table' then return fail({3}) end\n"
    "local cur = tonumber(g or '0') or 0\n"
    "if cur > tonumber(A[3]) then return fail({1, cur}) end\n"
    "for j = 5, #A, 2 do\n"
    "  local s = redis.pcall('HGET', A[4], A[j])\n"
    "  if type(s) == 'table' then return fail({3}) end\n"
    "  s = s or ''\n"
    "  if s ~= A[j + 1] then return fail({2, tonumber(A[j]), s}) end\n"
    "end\n"
    "return {0}\n";
