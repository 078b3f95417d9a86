/* speed_script.c - the Lua script that writes one micro-batch atomically (see README "Write path"). */
#include "speed.h"

/*
 * ARGV (no KEYS; every key name is built in C by lam_store):
 *  1 offsets hash   2 epochs hash   3 lam:rt:epochs   4 dedup slot hash (lam:dedup:@{slot})
 *  5 TTL of real-time keys (s)   6 EXPIREAT of the dedup slot hash (unix s)   7 lam:batch:current
 *  8 run the batch was filtered against   9 lam:tail   10 tail MAXLEN
 *  11 np, then np x (partition, stored offset we expect or "", next offset, epoch)
 *  .. ne, then ne x epoch (members of lam:rt:epochs)
 *  .. nk, then nk x (hash key, nc, nm, nc x (field, delta), nm x (op, field, value)):
 *       delta: HINCRBY key field delta (int64 overflow -> "overflow")
 *       op o: HSET field "overflow"   n: HSET field value if value < current (min)   x: ... > current (max)
 *       (the min/max fields of one key are read with one HMGET and written with one HSET)
 *  .. nz, then nz x (index zset, bucket)                ZADD zset bucket bucket
 *  .. nh, then nh x (HLL key, hidx set or "", n, n values)   PFADD key values; SADD hidx key
 *  .. nx, then nx x key                                EXPIRE key TTL (keys not renewed within the hour)
 *  .. nd, then nd x (id, "partition:offset")          HSET dedup slot hash (bulk); EXPIREAT
 *  .. nt, then nt x canonical event                   XADD tail MAXLEN ~ n * event e
 * Returns {0} written, {1, run} lam:batch:current moved, {2, partition, stored} offsets moved.
 * Nothing is written unless both checks pass, and no command after them can fail, so the
 * batch lands whole or not at all.
 */
const char speed_script_lua[] =
    "local A = ARGV\n"
    "local call, pcall, unpack, tonumber = redis.call, redis.pcall, unpack, tonumber\n"
    "local cur = tonumber(call('GET', A[7]) or '0') or 0\n"
    "if cur > tonumber(A[8]) then return {1, cur} end\n"
    "local np = tonumber(A[11])\n"
    "local i = 12\n"
    "for k = 0, np - 1 do\n"
    "  local j = i + 4 * k\n"
    "  local s = call('HGET', A[1], A[j]) or ''\n"
    "  if s ~= A[j + 1] then return {2, tonumber(A[j]), s} end\n"
    "end\n"
    "local dt = call('TYPE', A[4])\n"
    "dt = type(dt) == 'table' and dt.ok or dt\n"
    "if dt ~= 'hash' and dt ~= 'none' then call('DEL', A[4]) end\n"
    "local ttl = A[5]\n"
    "for k = 0, np - 1 do\n"
    "  local j = i + 4 * k\n"
    "  call('HSET', A[1], A[j], A[j + 2])\n"
    "  call('HSET', A[2], A[j], A[j + 3])\n"
    "end\n"
    "i = i + 4 * np\n"
    "local ne = tonumber(A[i]); i = i + 1\n"
    "for k = 0, ne - 1 do call('ZADD', A[3], A[i + k], A[i + k]) end\n"
    "if ne > 0 then call('EXPIRE', A[3], ttl) end\n"
    "i = i + ne\n"
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
    "local nz = tonumber(A[i]); i = i + 1\n"
    "for j = i, i + 2 * nz - 1, 2 do call('ZADD', A[j], A[j + 1], A[j + 1]) end\n"
    "i = i + 2 * nz\n"
    "local nh = tonumber(A[i]); i = i + 1\n"
    "for k = 1, nh do\n"
    "  local key, hidx, n = A[i], A[i + 1], tonumber(A[i + 2])\n"
    "  i = i + 3\n"
    "  local j, last = i, i + n - 1\n"
    "  while j <= last do\n"
    "    local e = math.min(j + 4999, last)\n"
    "    call('PFADD', key, unpack(A, j, e))\n"
    "    j = e + 1\n"
    "  end\n"
    "  i = i + n\n"
    "  if hidx ~= '' then call('SADD', hidx, key) end\n"
    "end\n"
    "local nx = tonumber(A[i]); i = i + 1\n"
    "for k = 0, nx - 1 do call('EXPIRE', A[i + k], ttl) end\n"
    "i = i + nx\n"
    "local nd = tonumber(A[i]); i = i + 1\n"
    "if nd > 0 then\n"
    "  local j, last = i, i + 2 * nd - 1\n"
    "  while j <= last do\n"
    "    local e = math.min(j + 3999, last)\n"
    "    call('HSET', A[4], unpack(A, j, e))\n"
    "    j = e + 1\n"
    "  end\n"
    "  call('EXPIREAT', A[4], A[6])\n"
    "end\n"
    "i = i + 2 * nd\n"
    "local nt = tonumber(A[i]); i = i + 1\n"
    "for k = 0, nt - 1 do\n"
    "  call('XADD', A[9], 'MAXLEN', '~', A[10], '*', 'event', A[i + k])\n"
    "end\n"
    "return {0}\n";
