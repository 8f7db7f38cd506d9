-- Benign traffic for the WAF rows of `make bench`: browser and API requests in turn
-- (a GET with four query arguments, a form POST, a JSON POST), browser-like headers.
local ua = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
local common = {
  ["Host"] = "shop.example.com",
  ["User-Agent"] = ua,
  ["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
  ["Accept-Language"] = "en-US,en;q=0.5",
  ["Accept-Encoding"] = "gzip, deflate, br",
  ["Cookie"] = "session=4f2a9c1e7b; theme=dark",
}
local function with(extra)
  local h = {}
  for k, v in pairs(common) do h[k] = v end
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end
local reqs = {
  wrk.format("GET", "/products?id=1234&page=2&q=blue+shoes&sort=price", with()),
  wrk.format("POST", "/account/login", with({["Content-Type"] = "application/x-www-form-urlencoded"}),
             "username=alice&password=correct+horse&remember=on&next=%2F"),
  wrk.format("POST", "/api/v1/orders", with({["Content-Type"] = "application/json", ["Accept"] = "application/json"}),
             '{"items":[{"sku":"A-1001","qty":2},{"sku":"B-2002","qty":1}],"note":"leave at the door"}'),
}
local i = 0
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
