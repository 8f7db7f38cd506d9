import Foundation
import Testing
import CInjection
@testable import WAF

let crsBase = "/usr/share/modsecurity-crs/rules"

func load(_ text: String) throws -> RuleSet {
    switch SecLang.load(text: text) {
    case .success(let rs): return rs
    case .failure(let e): throw e
    }
}

/// `prefilter`/`fastPath` off: decided without the literal prefilter / without any pre-test.
func run(_ rs: RuleSet, method: String = "GET", target: String, headers: [(String, String)] = [("Host", "localhost")], body: String? = nil,
         client: String = "127.0.0.1", prefilter: Bool = true, fastPath: Bool = true) -> Transaction {
    let tx = Transaction(ruleSet: rs, requestID: "t1", clientAddress: client)
    tx.usePrefilter = prefilter
    tx.useFastPath = fastPath
    var h = headers
    if body != nil, !h.contains(where: { $0.0.lowercased() == "content-type" }) { h.append(("Content-Type", "application/x-www-form-urlencoded")) }
    if let body { h.append(("Content-Length", String(body.utf8.count))) }
    if tx.processRequestHeaders(method: method, target: target, protocol: "HTTP/1.1", headers: h) == nil {
        if let body { tx.appendRequestBody(Array(body.utf8)) }
        _ = tx.processRequestBody()
    }
    return tx
}

@Suite struct ParserTests {
    @Test func loadsDebianCRS() throws {
        // The repository's base.conf, found from this file (the checkout may live anywhere).
        let repo = String(#filePath).components(separatedBy: "/Tests/WAFTests/")[0]
        let r = SecLang.load(files: [repo + "/filters/waf/base.conf"])
        switch r {
        case .success(let rs):
            #expect(rs.ruleCount > 500)
        case .failure(let e):
            Issue.record("CRS failed to load:\n\(e.description)")
        }
    }

    @Test func errorsCarryFileAndLine() {
        let r = SecLang.load(text: "SecRuleEngine On\n\nSecRule ARGS \"@rx (\" \"id:1,phase:2,deny\"\nSecFoo bar\n", name: "x.conf")
        guard case .failure(let e) = r else { Issue.record("expected failure"); return }
        #expect(e.diagnostics.count == 2)
        #expect(e.diagnostics[0].file == "x.conf" && e.diagnostics[0].line == 3)
        #expect(e.diagnostics[1].line == 4 && e.diagnostics[1].message.contains("SecFoo"))
    }

    @Test func continuationsAndQuotes() throws {
        let rs = try load("SecRule ARGS:a \"@rx ^x\\\"y$\" \\\n    \"id:5,\\\n    phase:1,deny,msg:'it''s'\"\n")
        #expect(rs.ruleCount == 1)
        let tx = run(rs, target: "/?a=x%22y")
        #expect(tx.intervention?.ruleID == 5)
    }

    @Test func targetsWithRegexKeysAndExclusions() throws {
        let rs = try load("SecRule REQUEST_COOKIES|!REQUEST_COOKIES:/__utm|_pk/|ARGS:/^a.$/ \"@contains bad\" \"id:6,phase:1,deny\"\n")
        #expect(run(rs, target: "/", headers: [("Cookie", "__utma=bad")]).intervention == nil)
        #expect(run(rs, target: "/", headers: [("Cookie", "x=bad")]).intervention?.status == 403)
        #expect(run(rs, target: "/?ab=bad").intervention?.status == 403)
        #expect(run(rs, target: "/?abc=bad").intervention == nil)
    }
}

@Suite struct TransformTests {
    @Test func decoders() {
        #expect(Transform.urlDecodeUni.apply(Array("a%u0041%2b+%ff01".utf8)) == Array("aA+ ".utf8) + [0xff] + Array("01".utf8))
        #expect(Transform.htmlEntityDecode.apply(Array("&lt;a&#x41;&#66;&quot".utf8)) == Array("<aAB\"".utf8))
        #expect(Transform.jsDecode.apply(Array("\\x41\\u0042\\n\\101".utf8)) == Array("AB\nA".utf8))
        #expect(Transform.cssDecode.apply(Array("\\41 \\62 c".utf8)) == Array("Abc".utf8))
        #expect(Transform.cmdLine.apply(Array("C^at  /etc/pass\"wd ;ls".utf8)) == Array("cat/etc/passwd ls".utf8))
        #expect(Transform.normalizePath.apply(Array("/a/./b/../c//d".utf8)) == Array("/a/c/d".utf8))
        #expect(Transform.replaceComments.apply(Array("a/*x*/b/*c".utf8)) == Array("a b ".utf8))
        #expect(Transform.utf8toUnicode.apply(Array("é".utf8)) == Array("%u00e9".utf8))
        #expect(T.hexEncode(SHA1.hash(Array("abc".utf8))) == Array("a9993e364706816aba3e25717850c26c9cd0d89d".utf8))
        // Every padding case: empty, one block with and without room for the length, exact
        // blocks, several blocks (digests from Python's hashlib).
        let digests: [(Int, String)] = [
            (0, "da39a3ee5e6b4b0d3255bfef95601890afd80709"), (55, "ddf57317ef34bfee3b6df83d359098930eb278bc"),
            (56, "a0d492bb0fc889d0eca3bc137066ab6f4f74f369"), (63, "c55856749bef509bdfe6bfebfc7bf4e793e82132"),
            (64, "bede92be29c3874e1b54ddc77988d606fc857a8e"), (119, "504e27376a6e0f0dba8295b85cb25dc4dfa17d23"),
            (120, "82134b02fb3f702491be9bed581eeab59334acb2"), (1000, "4231a8a50a10fa9758db8ec71fdef855b751048a"),
        ]
        for (n, hex) in digests {
            let message = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
            #expect(T.hexEncode(SHA1.hash(message)) == Array(hex.utf8), "length \(n)")
        }
        #expect(Transform.base64Decode.apply(Array("aGVsbG8=".utf8)) == Array("hello".utf8))
        #expect(Transform.compressWhitespace.apply(Array("a \t\n b".utf8)) == Array("a b".utf8))
    }

    /// Whatever a byte summary says a transformation leaves alone, it must leave alone.
    @Test func unchangedMeansUnchanged() {
        var samples: [Bytes] = ["", ".", "/", "plain", "Mixed Case", "a  b", "a b", "a\tb", "50%+1", "&amp;", "\\x41",
                                "/a/./b", "x;y,z", "caf\u{e9}", "q=1&r=2", "ab/*c*/", "a\u{0}b"].map { Array($0.utf8) }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let n = Int.random(in: 0...12, using: &rng)
            samples.append((0..<n).map { _ in Bool.random(using: &rng) ? UInt8.random(in: 0...255, using: &rng) : Array(" %+&/\\.;aA\t".utf8).randomElement(using: &rng)! })
        }
        for v in samples {
            let summary = v.withUnsafeBufferPointer { ByteSummary($0) }
            for t in Transform.allCases where t.unchanged(summary) {
                #expect(t.apply(v) == v, "\(t) changed \(v) though its summary said it would not")
            }
        }
    }

    /// The XSS shortcut's premise, checked against the linked libinjection: text with neither
    /// `<` nor `=` is never XSS for it, however the rest is assembled.
    @Test func xssNeedsAngleBracketOrEquals() {
        let parts = [" ", "\t", "\n", "'", "\"", "`", "/", ">", "on", "onerror", "onload", "javascript:", "vbscript:", "data:",
                     "alert(1)", "style", "href", "src", "x", "-", "!", "?", "&", "#", ";", ":", "(", ")", "\\", "expression",
                     "url", "script", "&lt;", "\u{0}", "\r", "xmlns", "formaction", "srcdoc", "svg", "img", "{", "}", "@", "+ADw-"]
        var rng = SystemRandomNumberGenerator()
        var checked = 0
        for _ in 0..<100_000 {
            var v = Bytes()
            for _ in 0..<Int.random(in: 1...10, using: &rng) { v += Array(parts.randomElement(using: &rng)!.utf8) }
            let direct = v.withUnsafeBufferPointer { b in b.withMemoryRebound(to: CChar.self) { cinjection_xss($0.baseAddress, $0.count) } }
            #expect(direct != 1, "libinjection flags \(String(decoding: v, as: UTF8.self)) without < or =")
            checked += 1
        }
        // And the shortcut does not hide what libinjection does report.
        for attack in ["<script>alert(1)</script>", "x onerror=alert(1)", "\" onmouseover=\"alert(1)"] {
            #expect(Array(attack.utf8).withUnsafeBufferPointer { Transaction.detectXSS($0) })
        }
        #expect(checked == 100_000)
    }

    @Test func ahoCorasick() {
        let ac = AhoCorasick([Array("he".utf8), Array("she".utf8), Array("hers".utf8), Array("xyz".utf8)])
        #expect(ac.search(Array("uSHErs".utf8)) != nil)
        #expect(ac.search(Array("abcxyz".utf8)).map { ac.patterns[$0] } == Array("xyz".utf8))
        #expect(ac.search(Array("abc".utf8)) == nil)
    }

    @Test func ipMatch() {
        let m = IPMatcher(["127.0.0.1", "10.0.0.0/8", "::1", "2001:db8::/32"])
        #expect(m?.contains("10.2.3.4") == true)
        #expect(m?.contains("11.2.3.4") == false)
        #expect(m?.contains("2001:db8:1::5") == true)
        #expect(m?.contains("::1") == true)
        // The byte form (what rules run) agrees with the string form, malformed input included.
        for s in ["10.2.3.4", "127.0.0.1", "11.2.3.4", "10.0.0", "10.0.0.0.1", "10..0.1", "10.0.0.256", "010.0.0.1",
                  "1000.0.0.1", "10.0.0.1 ", "", ".", "::1", "2001:db8:1::5", "2001:db9::1", "::ffff:10.0.0.1", "x"] {
            let bytes = Array(s.utf8)
            #expect(bytes.withUnsafeBufferPointer { m?.contains($0) } == m?.contains(s), "\(s)")
        }
    }
}

@Suite struct EvaluationTests {
    @Test func argsAndCookiesAreSplitAndDecodedAsBefore() throws {
        let rs = try load("SecRuleEngine DetectionOnly\nSecRequestBodyAccess On\n")
        let tx = run(rs, target: "/?a=1&&b=%41%zz+c&=v&noeq&C%41t=1&x=%4", headers: [("Host", "h"), ("Cookie", " a=1;  b ;=x; c=d=e;;")],
                     body: "p=%2B+q&&r")
        func pairs(_ es: [Entry]) -> [[String]] { es.map { [tx.string($0.key), tx.string($0.keyLower), tx.string($0.value)] } }
        #expect(pairs(tx.argsGet) == [["a", "a", "1"], ["b", "b", "A%zz c"], ["", "", "v"], ["noeq", "noeq", ""], ["CAt", "cat", "1"], ["x", "x", "%4"]])
        #expect(pairs(tx.argsPost) == [["p", "p", "+ q"], ["r", "r", ""]])
        #expect(pairs(tx.cookies) == [["a", "a", "1"], ["b ", "b ", ""], ["", "", "x"], ["c", "c", "d=e"]])
    }

    @Test func txComparisonsDecideLikeTheGeneralEvaluator() throws {
        // `&TX:x|TX:x "@eq 0"` (CRS's application exclusion switches) and friends: the TX
        // comparison path must match the same values, in the same order, with the same side
        // effects (setvar per match, MATCHED_VAR(_NAME) in macros, skipAfter) as the general one.
        let rs = try load("""
            SecRule ARGS:flag "@rx ^(.*)$" "id:1,phase:1,pass,nolog,capture,setvar:tx.flag=%{tx.1}"
            SecRule &TX:flag|TX:flag "@eq 0" "id:2,phase:1,pass,log,msg:'eq %{MATCHED_VAR_NAME}=%{MATCHED_VAR}',setvar:tx.hits=+1"
            SecRule &TX:flag|TX:flag "@le 1" "id:3,phase:1,pass,log,msg:'le %{MATCHED_VAR_NAME}=%{MATCHED_VAR}',setvar:tx.hits=+1"
            SecRule TX:hits "@ge 2" "id:4,phase:1,pass,log,msg:'hits %{MATCHED_VAR}'"
            SecRule &TX:flag|TX:flag "@eq 0" "id:5,phase:1,pass,nolog,skipAfter:END"
            SecAction "id:6,phase:1,pass,log,msg:'not skipped'"
            SecMarker END
            """)
        for target in ["/", "/?flag=0", "/?flag=1", "/?flag=2", "/?flag=x"] {
            func decided(fast: Bool) -> [String] {
                run(rs, target: target, fastPath: fast).matches.map { "\($0.id) \($0.msg)" }
            }
            let fast = decided(fast: true)
            #expect(fast == decided(fast: false), "\(target)")
            #expect(!fast.isEmpty, "\(target)")
        }
        // flag=1: both targets of rule 3 match, so its setvar runs twice (one log line per rule).
        #expect(run(rs, target: "/?flag=1").matches.map { "\($0.id) \($0.msg)" } == ["3 le TX:flag=1", "4 hits 2", "6 not skipped"])
        #expect(run(rs, target: "/").matches.map(\.id) == [2, 3, 4])
    }

    @Test func anomalyScoringLikeCRS() throws {
        let rs = try load("""
        SecDefaultAction "phase:2,log,auditlog,pass"
        SecAction "id:1,phase:1,pass,nolog,setvar:tx.threshold=5,setvar:tx.score=0"
        SecRule ARGS "@rx (?i)union\\s+select" "id:2,phase:2,block,capture,t:none,t:urlDecodeUni,msg:'sqli',logdata:'Matched %{TX.0} in %{MATCHED_VAR_NAME}',setvar:'tx.score=+%{tx.threshold}'"
        SecRule TX:SCORE "@ge %{tx.threshold}" "id:3,phase:2,deny,status:403,msg:'Score %{tx.score}'"
        """)
        let tx = run(rs, target: "/?q=1%20UNION%20SELECT%20x")
        #expect(tx.intervention?.ruleID == 3)
        let logged = tx.matches.filter(\.log)
        #expect(logged.map(\.id) == [2, 3])
        #expect(logged.first?.data == "Matched UNION SELECT in ARGS:q")
        #expect(logged.last?.msg == "Score 5")
        #expect(run(rs, target: "/?q=hello").intervention == nil)
    }

    @Test func chainsSkipAfterAndCtl() throws {
        let rs = try load("""
        SecRule REQUEST_METHOD "@streq POST" "id:10,phase:1,pass,nolog,chain"
            SecRule &REQUEST_HEADERS:Content-Type "@eq 0" "setvar:tx.nocontent=1"
        SecRule TX:NOCONTENT "@eq 1" "id:11,phase:1,deny,status:400"
        SecRule REQUEST_URI "@beginsWith /skip" "id:12,phase:1,pass,nolog,skipAfter:END"
        SecRule REQUEST_URI "@contains x" "id:13,phase:1,deny"
        SecMarker END
        SecRule REQUEST_URI "@beginsWith /admin" "id:14,phase:1,pass,nolog,ctl:ruleRemoveById=15"
        SecRule REQUEST_URI "@contains admin" "id:15,phase:1,deny"
        """)
        #expect(run(rs, method: "POST", target: "/", headers: [("Host", "a")]).intervention?.ruleID == 11)
        #expect(run(rs, target: "/skipx").intervention == nil)
        #expect(run(rs, target: "/x").intervention?.ruleID == 13)
        #expect(run(rs, target: "/admin").intervention == nil)
        #expect(run(rs, target: "/y/admin").intervention?.ruleID == 15)
    }

    /// TX keys named in the rules live in slots, computed ones in a map: both are one
    /// collection to setvar, macros, exact and regex keys and counts, case-insensitively.
    @Test func txSlotsAndComputedKeysAreOneCollection() throws {
        let rs = try load("""
        SecAction "id:30,phase:1,pass,nolog,setvar:tx.Score=2,setvar:tx.score=+3,setvar:tx.gone=1,setvar:!tx.GONE"
        SecRule ARGS "@rx ^(\\w+)$" "id:31,phase:1,pass,nolog,capture,setvar:'tx.dyn_%{tx.1}=%{tx.score}'"
        SecRule TX:SCORE "@eq 5" "id:32,phase:1,pass,log,msg:'score %{tx.score}'"
        SecRule &TX:GONE "@eq 0" "id:33,phase:1,pass,log"
        SecRule &TX:/^dyn_/ "@eq 2" "id:34,phase:1,pass,log"
        SecRule TX:/^DYN_B/ "@streq 5" "id:35,phase:1,pass,log,logdata:'%{MATCHED_VAR_NAME}'"
        SecRule TX:/^score$/ "@eq 5" "id:36,phase:1,pass,log"
        SecAction "id:37,phase:1,pass,nolog,setvar:tx.threshold=5"
        SecRule TX:SCORE "@ge %{tx.threshold}" "id:38,phase:1,pass,log,logdata:'%{MATCHED_VAR}'"
        SecRule TX:SCORE "@lt %{tx.never_set}" "id:39,phase:1,pass,log"
        SecRule TX:SCORE "@gt %{tx.never_set}" "id:40,phase:1,pass,log"
        """)
        let tx = run(rs, target: "/?a=alpha&b=beta")
        let ids = tx.matches.map(\.id)
        #expect(ids == [32, 33, 34, 35, 36, 38, 40])
        #expect(tx.matches.first { $0.id == 38 }?.data == "5")
        #expect(tx.matches.first?.msg == "score 5")
        #expect(tx.matches.first { $0.id == 35 }?.data == "TX:dyn_beta")
    }

    @Test func detectionOnlyLogsButDoesNotBlock() throws {
        let rs = try load("SecRuleEngine DetectionOnly\nSecRule ARGS \"@contains evil\" \"id:20,phase:2,deny,log\"\n")
        let tx = run(rs, target: "/?a=evil")
        #expect(tx.intervention == nil)
        #expect(tx.matches.first?.id == 20)
        #expect(tx.matches.first?.modsecText(uri: "/", uniqueID: "t1", hostname: "h").contains("[id \"20\"]") == true)
    }

    @Test func ipCollectionPersistsAcrossRequestsAndExpires() async throws {
        let rs = try load("""
        SecRuleEngine On
        SecAction "id:1,phase:1,pass,nolog,initcol:ip=%{REMOTE_ADDR},setvar:ip.hits=+1"
        SecRule IP:blocked "@eq 1" "id:2,phase:1,deny,status:403"
        SecRule IP:hits "@gt 2" "id:3,phase:1,deny,status:429,setvar:ip.blocked=1,expirevar:ip.blocked=1"
        """)
        func status(_ client: String) -> Int? {
            let tx = run(rs, target: "/", client: client)
            tx.processLogging()   // writes the IP record back
            return tx.intervention?.status
        }
        #expect(status("10.9.8.1") == nil)
        #expect(status("10.9.8.1") == nil)
        #expect(status("10.9.8.1") == 429)      // third request of this client
        #expect(status("10.9.8.2") == nil)      // another client has its own record
        #expect(status("10.9.8.1") == 403)     // ip.blocked persisted from the previous request
        try await Task.sleep(for: .milliseconds(2100))
        #expect(status("10.9.8.1") == 429)     // ip.blocked expired; hits kept counting
    }

    @Test func bodies() throws {
        let rs = try load("""
        SecRule REQUEST_HEADERS:Content-Type "@rx ^application/json" "id:1,phase:1,pass,nolog,ctl:requestBodyProcessor=JSON"
        SecRule ARGS:json.a.b "@streq x" "id:2,phase:2,deny"
        SecRule ARGS:field "@streq v" "id:3,phase:2,deny"
        SecRule FILES "@endsWith .php" "id:4,phase:2,deny"
        SecRule REQBODY_ERROR "!@eq 0" "id:5,phase:2,deny,status:400"
        """)
        #expect(run(rs, method: "POST", target: "/", headers: [("Host", "a"), ("Content-Type", "application/json")], body: #"{"a":{"b":"x"}}"#).intervention?.ruleID == 2)
        #expect(run(rs, method: "POST", target: "/", headers: [("Host", "a"), ("Content-Type", "application/json")], body: #"{"a":"#).intervention?.ruleID == 5)
        #expect(run(rs, method: "POST", target: "/", body: "field=v").intervention?.ruleID == 3)
        let mp = "--XX\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.php\"\r\n\r\n<?php\r\n--XX--\r\n"
        #expect(run(rs, method: "POST", target: "/", headers: [("Host", "a"), ("Content-Type", "multipart/form-data; boundary=XX")], body: mp).intervention?.ruleID == 4)
    }
}

@Suite struct CRSTests {
    static let rs: RuleSet? = {
        let repo = String(#filePath).components(separatedBy: "/Tests/WAFTests/")[0]
        if case .success(let rs) = SecLang.load(files: [repo + "/filters/waf/base.conf"]) { return rs }
        return nil
    }()

    @Test(.enabled(if: rs != nil)) func blocksSQLiXSSLFI() throws {
        let rs = try #require(Self.rs)
        for attack in ["/?id=1%27%20or%20%271%27=%271", "/?q=%3Cscript%3Ealert(1)%3C/script%3E", "/?f=../../../../etc/passwd", "/?x=;cat%20/etc/passwd"] {
            let tx = run(rs, target: attack, headers: [("Host", "localhost"), ("User-Agent", "Mozilla/5.0"), ("Accept", "*/*")])
            #expect(tx.intervention?.status == 403, "\(attack): \(tx.matches.map(\.id))")
            #expect(tx.matches.contains { $0.id == 949110 })
        }
    }

    @Test(.enabled(if: rs != nil)) func benignPasses() throws {
        let rs = try #require(Self.rs)
        let h = [("Host", "shop.example.com"), ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"), ("Accept", "text/html,application/xhtml+xml"),
                 ("Accept-Language", "en-US,en;q=0.5"), ("Cookie", "session=abc123; theme=dark")]
        for (m, t, b) in [("GET", "/products?category=shoes&size=42&color=blue&page=2", nil), ("POST", "/login", "user=alice&password=s3cret%21"),
                          ("GET", "/search?q=red+running+shoes", nil), ("GET", "/static/app.js?v=1.2.3", nil)] as [(String, String, String?)] {
            let tx = run(rs, method: m, target: t, headers: h, body: b)
            #expect(tx.intervention == nil, "\(t): \(tx.matches.map { "\($0.id) \($0.msg)" })")
        }
    }
}

@Suite struct PrefilterTests {
    func lits(_ p: String) -> [String]? { RegexLiterals.required(Array(p.utf8)).map { $0.map { String(decoding: $0, as: UTF8.self) } } }

    /// The scanner sets exactly the bits of the literals a text contains (ASCII case folded),
    /// against a plain substring search: random literal sets over a small alphabet (so literals
    /// share prefixes and suffixes, and nodes of every kind occur), random texts over the same
    /// alphabet plus bytes no literal has.
    @Test func scannerFindsExactlyTheContainedLiterals() throws {
        var rng = SystemRandomNumberGenerator()
        let alphabet: [UInt8] = Array("abcAB/<'".utf8) + [0x00, 0xE9]
        func word(_ n: Int, _ extra: [UInt8] = []) -> [UInt8] { (0..<n).map { _ in (alphabet + extra).randomElement(using: &rng)! } }
        for _ in 0..<200 {
            let count = Int.random(in: 1...120, using: &rng)
            let words = (count + 63) / 64
            let literals = (0..<count).map { _ in word(Int.random(in: 1...6, using: &rng)).map(lowerByte) }
            let scanner = try #require(LiteralScanner(literals.enumerated().map { ($1, Int32($0)) }, words: words))
            for _ in 0..<20 {
                let text = word(Int.random(in: 0...40, using: &rng), Array("Z .%".utf8))
                var bits = [UInt64](repeating: 0, count: words)
                text.withUnsafeBufferPointer { t in bits.withUnsafeMutableBufferPointer { scanner.scan(t, into: $0.baseAddress!) } }
                let folded = text.map(lowerByte)
                var expected = [UInt64](repeating: 0, count: words)
                for (i, l) in literals.enumerated() where bytesFind(folded, l) != nil { expected[i >> 6] |= 1 << UInt64(i & 63) }
                #expect(bits == expected, "\(literals.map { String(decoding: $0, as: UTF8.self) }) in \(String(decoding: text, as: UTF8.self))")
            }
        }
    }

    /// `^.*$` is answered without PCRE2: the same as PCRE2 gives for an equivalent pattern.
    @Test func wholeValuePatternAgreesWithPCRE() throws {
        let fast = try Regex("^.*$"), slow = try Regex("^(?:.*)$")
        #expect(fast.matchesWhole && !slow.matchesWhole)
        for subject in ["", "a", "a\nb", "\n", "x\n", "\u{0}\r\n\t z", "line1\nline2\n"] {
            let b = Array(subject.utf8)
            #expect(fast.matches(b) == slow.matches(b))
            #expect(fast.firstMatch(b, groups: 9) == slow.firstMatch(b, groups: 9), "subject \(b)")
        }
    }

    @Test func requiredLiteralsOfCommonShapes() {
        #expect(lits("(?i)union\\s+select") == ["select"])
        #expect(lits("abc|def") == ["abc", "def"])
        #expect(lits("a(?:b|c)d") == ["abd", "acd"])
        #expect(lits("FOO\\d+bar") == ["bar"] || lits("FOO\\d+bar") == ["foo"])
        #expect(lits("<script[^>]*>") == ["<script"])
        #expect(lits("\\x3cscript") == ["<script"])
        #expect(lits("[\"'`]") == ["\"", "'", "`"])
        #expect(lits("ab?c") == ["abc", "ac"])
        // No requirement: anything optional, unanchored wildcards, backreferences, extended mode.
        #expect(lits("^.*$") == nil)
        #expect(lits("x?") == nil)
        #expect(lits("a|.") == nil)
        #expect(lits("(a)?\\1") == nil)
        #expect(lits("(?x) a b c") == nil)
        #expect(lits("(?(1)a|b)") == nil)
        #expect(lits("[^a]") == nil)
        #expect(lits(String(repeating: "(", count: 100_000) + "a" + String(repeating: ")", count: 100_000)) == nil)  // too deep: bails, no recursion blow-up
        // Lookarounds are zero width: only what is consumed counts.
        #expect(lits("(?=abc)xyz") == ["xyz"])
        #expect(lits("(?<!foo)bar") == ["bar"])
    }

    /// Soundness on real attack text: whenever a CRS regex matches a string, one of its
    /// literals is in that string. The corpus is every value line of the CRS regression tests,
    /// raw and percent-decoded.
    @Test(.enabled(if: CRSTests.rs != nil)) func literalsAreRequiredOnCRSPayloads() throws {
        let rs = try #require(CRSTests.rs)
        let repo = String(#filePath).components(separatedBy: "/Tests/WAFTests/")[0]
        let dir = repo + "/../shared/crs-tests/v3.3.4"
        var corpus: [Bytes] = []
        if let e = FileManager.default.enumerator(atPath: dir) {
            for case let f as String in e where f.hasSuffix(".yaml") {
                guard let text = try? String(contentsOfFile: dir + "/" + f, encoding: .isoLatin1) else { continue }
                for line in text.split(separator: "\n") {
                    guard let colon = line.firstIndex(of: ":") else { continue }
                    let v = Bytes(line[line.index(after: colon)...].utf8)
                    corpus.append(v)
                    corpus.append(T.urlDecode(v, uni: true))
                }
            }
        }
        try #require(corpus.count > 1000, "CRS regression tests not found under \(dir)")
        var checked = 0
        for p in 1...5 {
            for r in rs.phases[p] where !r.isMarker {
                var link: Rule? = r
                while let l = link {
                    link = l.chained
                    guard case .rx(let re) = l.op.kind, let req = RegexLiterals.required(re.pattern.latin1) else { continue }
                    for v in corpus where re.matches(v) {
                        let folded = v.map(lowerByte)
                        #expect(req.contains { bytesFind(folded, $0) != nil }, "rule \(l.id): /\(re.pattern)/ matched \(String(decoding: v, as: UTF8.self)) without any of its literals")
                        checked += 1
                    }
                }
            }
        }
        #expect(checked > 1000)
    }

    /// A value a chain leaves unchanged is scanned once by the shared automaton and masked per
    /// group: the bits must be exactly those of the group's own automaton, for every group and
    /// source, on CRS attack payloads and plain values alike.
    @Test(.enabled(if: CRSTests.rs != nil)) func sharedScanGivesEachGroupItsOwnBits() throws {
        let rs = try #require(CRSTests.rs)
        let pf = try #require(rs.prefilter)
        let values = ["1' OR '1'='1", "<script>alert(1)</script>", "../../etc/passwd", ";cat /etc/passwd", "blue shoes",
                      "${jndi:ldap://x}", "<?php system('id'); ?>", "SELECT * FROM users", "Mozilla/5.0 (X11; Linux x86_64)",
                      "text/html,application/xhtml+xml", "session=4f2a9c1e7b", "%2e%2e%2f", "AbC\\x41&amp;", "/bin/bash -c id"]
        for v in values {
            let enc = v.utf8.map { String(format: "%%%02X", $0) }.joined()
            func bits(_ sharing: Bool) -> [[UInt64]] {
                let tx = Transaction(ruleSet: rs, requestID: "t", clientAddress: "127.0.0.1")
                tx.usePrefilterSharing = sharing
                _ = tx.processRequestHeaders(method: "GET", target: "/a/\(enc)?\(enc)=\(enc)&q=\(enc)",
                                             protocol: "HTTP/1.1", headers: [("Host", "localhost"), ("User-Agent", v), ("X-\(v.count)", v)])
                var out: [[UInt64]] = []
                for g in pf.groups.indices {
                    for s in 0..<Prefilter.slotCount {
                        let off = tx.prefilterBits(pf, group: g, slot: s)
                        out.append(tx.prefilterPool.map { Array(UnsafeBufferPointer(start: $0 + off, count: pf.words)) } ?? [])
                    }
                }
                return out
            }
            #expect(bits(true) == bits(false), "\(v)")
        }
    }

    /// Transformation results come from a cache keyed by chain and by path (the steps that
    /// changed the value): whatever order the CRS's chains ask in, each result is the plain
    /// step-by-step application of its chain.
    @Test(.enabled(if: CRSTests.rs != nil)) func scanChainsDropOnlyWhatTheScannerFolds() throws {
        // Each CRS prefilter group scans its values through its chain minus trailing
        // t:lowercase: the scanner must find the same literals as over the full chain.
        let rs = try #require(CRSTests.rs)
        let pf = try #require(rs.prefilter)
        #expect(pf.groups.contains { $0.scanTransforms != $0.transforms })
        let values = ["Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", "UNION SELECT Password FROM Users",
                      "<SCRIPT>alert(1)</SCRIPT>", "%2E%2E%2F/ETC/PASSWD", "C:\\Windows\\System32\\CMD.EXE /C DIR", "en-US,en;q=0.5",
                      "&LT;IMG SRC=x OnError=alert(1)&GT;", "JaVaScRiPt:eval('x')", #"\u0041\x42 %u0043"#]
        for g in pf.groups {
            for v in values {
                var full = Array(v.utf8), partial = Array(v.utf8)
                for t in g.transforms { full = t.apply(full) }
                for t in g.scanTransforms { partial = t.apply(partial) }
                func bits(_ b: [UInt8]) -> [UInt64] {
                    var out = [UInt64](repeating: 0, count: pf.words)
                    b.withUnsafeBufferPointer { p in out.withUnsafeMutableBufferPointer { g.scanner.scan(p, into: $0.baseAddress!) } }
                    return out
                }
                #expect(bits(full) == bits(partial), "\(g.transforms) \(v)")
            }
        }
    }

    @Test(.enabled(if: CRSTests.rs != nil)) func cachedTransformationsEqualPlainApplication() throws {
        let rs = try #require(CRSTests.rs)
        var chains: [Int: [Transform]] = [:]
        for p in 1...5 {
            for r in rs.phases[p] where !r.isMarker {
                var link: Rule? = r
                while let l = link { chains[l.transformChainID] = l.transforms; link = l.chained }
            }
        }
        #expect(chains.count > 10)
        let values = ["1' OR '1'='1", "<script>alert(1)</script>", "..%2F..%2Fetc%2Fpasswd", ";cat /etc/passwd", "blue shoes",
                      "%24%7Bjndi:ldap://x%7D", "&lt;img src=x onerror=alert(1)&gt;", "SELECT/**/*/**/FROM users", "Mozilla/5.0 (X11)",
                      "\\u0041\\x42%u0043", "A\u{0}B  C\tD", "/a/./b/../c//d", "QUFBQQ==", "C:\\Windows\\..\\x", "plain"]
        let tx = Transaction(ruleSet: rs, requestID: "t", clientAddress: "127.0.0.1")
        let entries = values.map { tx.entry(Array("k".utf8), Array($0.utf8)) }
        // Twice, in opposite orders: the second pass answers from the cache.
        for order in [Array(chains.keys.sorted()), Array(chains.keys.sorted().reversed())] {
            for e in entries {
                for id in order {
                    let chain = chains[id] ?? []
                    let plain = chain.reduce(tx.bytes(e.value)) { $1.apply($0) }
                    let got = tx.bytes(tx.transformed(e.value, id: e.id, chainID: id, transforms: chain))
                    #expect(got == plain, "chain \(chain.map(\.rawValue)) on \(String(decoding: tx.bytes(e.value), as: UTF8.self))")
                }
            }
        }
    }

    /// The audit log's message is ModSecurity's text JSON-escaped, with each rule's fixed parts
    /// escaped once at load: the same bytes as escaping the whole text per match.
    @Test(.enabled(if: CRSTests.rs != nil)) func auditJSONIsTheEscapedModSecurityText() throws {
        let rs = try #require(CRSTests.rs)
        let tx = Transaction(ruleSet: rs, requestID: "t\"1", clientAddress: "127.0.0.1")
        _ = tx.processRequestHeaders(method: "GET", target: "/?q=%3Cscript%3Ealert(%22x%22)%3C/script%3E&id=1%27%20or%20%271%27=%271",
                                     protocol: "HTTP/1.1", headers: [("Host", "localhost"), ("User-Agent", "curl\t\"x\"")])
        _ = tx.processRequestBody()
        #expect(tx.matches.count > 3)
        var quoted = tx.matches[0]
        quoted.msg = "a \"quoted\" msg \\ with\tcontrol"
        quoted.data = "\"\"\\\""
        for m in tx.matches + [quoted] {
            var fast: [UInt8] = [], plain: [UInt8] = []
            m.appendModsecJSON(to: &fast, uri: "/a\"b", uniqueID: "t\"1", hostname: "h\\")
            JSONEscape.append(m.modsecText(uri: "/a\"b", uniqueID: "t\"1", hostname: "h\\"), to: &plain)
            #expect(!m.escapedHead.isEmpty && !m.escapedTail.isEmpty)
            #expect(fast == plain, "rule \(m.id)")
        }
    }

    /// REQUEST_BODY is a prefilter source only while rules can see it: a JSON body hides it,
    /// a later ctl:forceRequestBodyVariable shows it again, and the prefilter follows.
    @Test func prefilterFollowsRequestBodyVisibility() throws {
        let rs = try load("""
        SecRequestBodyAccess On
        SecRule REQUEST_HEADERS:Content-Type "@contains json" "id:1,phase:1,pass,nolog,ctl:requestBodyProcessor=JSON"
        SecRule REQUEST_BODY "@rx secret\\w+" "id:2,phase:2,pass,log"
        SecRule REQUEST_METHOD "@streq POST" "id:3,phase:2,pass,nolog,ctl:forceRequestBodyVariable=On"
        SecRule REQUEST_BODY "@rx secret\\w+" "id:4,phase:2,pass,log"
        """)
        #expect(rs.prefilter != nil)
        for (type, body, expected) in [("application/json", #"{"a":"secretword"}"#, [4]), ("application/x-www-form-urlencoded", "a=secretword", [2, 4]),
                                       ("application/json", #"{"a":"plain"}"#, [])] {
            func matched(_ prefilter: Bool) -> [Int] {
                run(rs, method: "POST", target: "/", headers: [("Host", "localhost"), ("Content-Type", type)], body: body,
                    prefilter: prefilter).matches.map(\.id)
            }
            #expect(matched(true) == expected, "\(type) \(body)")
            #expect(matched(false) == expected, "\(type) \(body)")
        }
    }

    @Test(.enabled(if: CRSTests.rs != nil)) func prefilterDecidesLikeTheFullEvaluator() throws {
        // The same requests through the CRS with and without the prefilter must match the same rules.
        let rs = try #require(CRSTests.rs)
        #expect(rs.prefilter != nil)
        let h = [("Host", "localhost"), ("User-Agent", "Mozilla/5.0"), ("Accept", "*/*")]
        for t in ["/?id=1%27%20or%20%271%27=%271", "/?q=%3Cscript%3Ealert(1)%3C/script%3E", "/?f=../../../../etc/passwd",
                  "/?x=;cat%20/etc/passwd", "/products?id=1234&page=2&q=blue+shoes", "/?a=%24%7Bjndi:ldap://x%7D",
                  "/index.php?x=%3C%3Fphp%20system(%27id%27)%3B",
                  // Double-encoded: the multiMatch rules see different intermediates.
                  "/?q=%253Cscript%253Ealert(1)%253C/script%253E&id=%2527%2520or%25201%253D1&f=..%252F..%252Fetc%252Fpasswd"] {
            func matched(_ prefilter: Bool, fast: Bool = true) -> [Int] {
                run(rs, target: t, headers: h, prefilter: prefilter, fastPath: fast).matches.map(\.id)
            }
            let with = matched(true)
            #expect(!with.isEmpty || t.hasPrefix("/products"))
            #expect(with == matched(false), "\(t)")
            // The general evaluator alone (no prefilter, no pre-test, multiMatch included).
            #expect(with == matched(false, fast: false), "\(t)")
        }
        // Bodies: form (REQUEST_BODY visible) and JSON (hidden; its values are ARGS).
        for (type, body) in [("application/x-www-form-urlencoded", "a=java.lang.Runtime&b=%3Cscript%3Ex%3C/script%3E"),
                             ("application/json", #"{"a":"java.lang.Runtime","b":"<script>x</script>","c":"1' or '1'='1"}"#),
                             ("application/x-www-form-urlencoded", "username=alice&password=correct+horse")] {
            func matched(_ prefilter: Bool, fast: Bool = true) -> [Int] {
                run(rs, method: "POST", target: "/submit", headers: h + [("Content-Type", type)], body: body,
                    prefilter: prefilter, fastPath: fast).matches.map(\.id)
            }
            let with = matched(true)
            #expect(!with.isEmpty || body.hasPrefix("username"))
            #expect(with == matched(false), "\(body)")
            #expect(with == matched(false, fast: false), "\(body)")
        }
    }
}
