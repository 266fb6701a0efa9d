-- Billing periods inside Redis (the arithmetic of relay.periods, which the tests compare with it):
-- add_interval(iso, interval, count) for times written 'YYYY-MM-DDTHH:MM:SSZ' (UTC, to the second),
-- and iso_ms(iso), the Unix milliseconds of one. Loaded ahead of the scripts that start a period.

local function days_from_civil(y, m, d)  -- days since 1970-01-01 (H. Hinnant's algorithm)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function parse_iso(iso)
  return tonumber(string.sub(iso, 1, 4)), tonumber(string.sub(iso, 6, 7)), tonumber(string.sub(iso, 9, 10)),
    string.sub(iso, 11)  -- 'THH:MM:SSZ'
end

local function month_days(y, m)
  return days_from_civil(m == 12 and y + 1 or y, m == 12 and 1 or m + 1, 1) - days_from_civil(y, m, 1)
end

local function iso_ms(iso)
  local y, m, d, rest = parse_iso(iso)
  local seconds = tonumber(string.sub(rest, 2, 3)) * 3600 + tonumber(string.sub(rest, 5, 6)) * 60
    + tonumber(string.sub(rest, 8, 9))
  return (days_from_civil(y, m, d) * 86400 + seconds) * 1000
end

local function add_interval(iso, interval, count)
  local y, m, d, rest = parse_iso(iso)
  if interval == 'day' or interval == 'week' then
    y, m, d = civil_from_days(days_from_civil(y, m, d) + count * (interval == 'week' and 7 or 1))
  else
    local total = y * 12 + (m - 1) + count * (interval == 'year' and 12 or 1)
    y, m = math.floor(total / 12), total % 12 + 1
    d = math.min(d, month_days(y, m))
  end
  return string.format('%04d-%02d-%02d', y, m, d) .. rest
end
