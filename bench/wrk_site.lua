-- Owned by bench/sitecases.py: browser-like traffic for the site-mix and cold cases.
--
-- wrk ... -s wrk_site.lua URL -- PATHS_FILE
--   PATHS_FILE  one URL path a line (bench/sitemix.py writes it, seeded): the requests
--               in order, so every server gets the same sequence.
-- done() is bench/wrk_report.lua's (loaded from next to this script): the same JSON
-- totals, p99 included, as the other cases.
--
-- Every request head is distinct, as a browser's are: a cookie carries a counter, and
-- User-Agent, Accept-Language and Accept-Encoding rotate; Accept follows the file type.

local paths = {}
local count = 0
local counter = 0
local headers = {}

local agents = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
  "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.67",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0",
}
local languages = {
  "en-US,en;q=0.9", "de-DE,de;q=0.9,en;q=0.8", "fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7",
  "en-GB,en;q=0.9", "es-ES,es;q=0.9", "ja,en-US;q=0.9,en;q=0.8",
}
local encodings = { "gzip, deflate, br", "gzip, deflate, br, zstd", "gzip, deflate" }
local accepts = {
  html = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
  css = "text/css,*/*;q=0.1",
  image = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
  other = "*/*",
}
local kinds = {
  html = "html", css = "css", png = "image", jpg = "image", svg = "image",
  js = "other", json = "other", woff2 = "other",
}

function init(args)
  local file = assert(io.open(args[1], "r"))
  for line in file:lines() do
    count = count + 1
    paths[count] = line
  end
  file:close()
  assert(count > 0, "no paths in " .. args[1])
end

local function accept_for(path)
  if path:sub(-1) == "/" then
    return accepts.html
  end
  local suffix = path:match("%.(%w+)$")
  return accepts[kinds[suffix] or "other"]
end

request = function()
  counter = counter + 1
  local path = paths[(counter - 1) % count + 1]
  headers["User-Agent"] = agents[counter % #agents + 1]
  headers["Accept"] = accept_for(path)
  headers["Accept-Language"] = languages[counter % #languages + 1]
  headers["Accept-Encoding"] = encodings[counter % #encodings + 1]
  headers["Referer"] = "http://127.0.0.1/site/d01/"
  headers["Cookie"] = string.format(
    "session=%08x%08x; _ga=GA1.1.%d.1714000000; theme=%s; consent=1",
    counter, (counter * 2654435761) % 4294967296, 100000 + counter % 899999,
    (counter % 3 == 0) and "dark" or "light")
  return wrk.format("GET", path, headers)
end

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wrk_report.lua")
