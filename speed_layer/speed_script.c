/* speed_script.c - the Lua script that writes one micro-batch atomically (see README "Write path"). */
#include "speed.h"

/*
 * ARGV (no KEYS; every key name is built in C by lam_store):
 *  1 offsets hash   2 epochs hash   3 lam:rt:epochs   4 (unused, reserved)
 *  5 TTL of real-time keys (s)   6 dedup window (s)   7 lam:batch:current   8 run the batch was
 *  filtered against   9 lam:tail   10 tail MAXLEN
 *  11 np, then np x (partition, stored offset we expect or "", next offset, epoch)
 *  .. ne, then ne x epoch (members of lam:rt:epochs)
 *  .. nops, then nops x (op, key, a, b):
 *       c  HINCRBY key a b (overflow -> "overflow")   o  HSET key a "overflow"
 *       n  HSET key a b if b < current (min)           x  HSET key a b if b > current (max)
 *       z  ZADD key a a (bucket index)
 *  .. nh, then nh x (HLL key, hidx set or "", n, n values)   PFADD key values; SADD hidx key
 *  .. nx, then nx x key                                EXPIRE key TTL (keys not renewed within the hour)
 *  .. nd, then nd x (dedup key, "partition:offset")   SET NX EX window
 *  .. nt, then nt x canonical event                   XADD tail MAXLEN ~ n * event e
 * Returns {0} written, {1, run} lam:batch:current moved, {2, partition, stored} offsets moved.
 * Nothing is written unless both checks pass, and no command after them can fail, so the
 * batch lands whole or not at all.
 */
const char speed_script_lua[] =
    "local A = ARGV\n"
    "local cur = tonumber(redis.call('GET', A[7]) or '0') or 0\n"
    "if cur > tonumber(A[8]) then return {1, cur} end\n"
    "local np = tonumber(A[11])\n"
    "local i = 12\n"
    "for k = 0, np - 1 do\n"
    "  local j = i + 4 * k\n"
    "  local s = redis.call('HGET', A[1], A[j]) or ''\n"
    "  if s ~= A[j + 1] then return {2, tonumber(A[j]), s} end\n"
    "end\n"
    "local ttl = A[5]\n"
    "for k = 0, np - 1 do\n"
    "  local j = i + 4 * k\n"
    "  redis.call('HSET', A[1], A[j], A[j + 2])\n"
    "  redis.call('HSET', A[2], A[j], A[j + 3])\n"
    "end\n"
    "i = i + 4 * np\n"
    "local ne = tonumber(A[i]); i = i + 1\n"
    "for k = 0, ne - 1 do redis.call('ZADD', A[3], A[i + k], A[i + k]) end\n"
    "if ne > 0 then redis.call('EXPIRE', A[3], ttl) end\n"
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
    "local zseen = {}\n"
    "local nops = tonumber(A[i]); i = i + 1\n"
    "for k = 0, nops - 1 do\n"
    "  local j = i + 4 * k\n"
    "  local op, key, a, b = A[j], A[j + 1], A[j + 2], A[j + 3]\n"
    "  if op == 'c' then\n"
    "    local ok = redis.pcall('HINCRBY', key, a, b)\n"
    "    if type(ok) == 'table' and ok.err then redis.call('HSET', key, a, 'overflow') end\n"
    "  elseif op == 'o' then\n"
    "    redis.call('HSET', key, a, 'overflow')\n"
    "  elseif op == 'n' or op == 'x' then\n"
    "    local v = redis.call('HGET', key, a)\n"
    "    if not v or (v ~= 'overflow' and ((op == 'n' and lt(b, v)) or (op == 'x' and lt(v, b)))) then\n"
    "      redis.call('HSET', key, a, b)\n"
    "    end\n"
    "  elseif op == 'z' then\n"
    "    local zk = key .. '\\0' .. a\n"
    "    if not zseen[zk] then zseen[zk] = true; redis.call('ZADD', key, a, a) end\n"
    "  end\n"
    "end\n"
    "i = i + 4 * nops\n"
    "local nh = tonumber(A[i]); i = i + 1\n"
    "for k = 1, nh do\n"
    "  local key, hidx, n = A[i], A[i + 1], tonumber(A[i + 2])\n"
    "  i = i + 3\n"
    "  local j, last = i, i + n - 1\n"
    "  while j <= last do\n"
    "    local e = math.min(j + 4999, last)\n"
    "    redis.call('PFADD', key, unpack(A, j, e))\n"
    "    j = e + 1\n"
    "  end\n"
    "  i = i + n\n"
    "  if hidx ~= '' then redis.call('SADD', hidx, key) end\n"
    "end\n"
    "local nx = tonumber(A[i]); i = i + 1\n"
    "for k = 0, nx - 1 do redis.call('EXPIRE', A[i + k], ttl) end\n"
    "i = i + nx\n"
    "local nd = tonumber(A[i]); i = i + 1\n"
    "for k = 0, nd - 1 do\n"
    "  local j = i + 2 * k\n"
    "  redis.call('SET', A[j], A[j + 1], 'NX', 'EX', A[6])\n"
    "end\n"
    "i = i + 2 * nd\n"
    "local nt = tonumber(A[i]); i = i + 1\n"
    "for k = 0, nt - 1 do\n"
    "  redis.call('XADD', A[9], 'MAXLEN', '~', A[10], '*', 'event', A[i + k])\n"
    "end\n"
    "return {0}\n";
