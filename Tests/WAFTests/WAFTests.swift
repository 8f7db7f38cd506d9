import Testing
@testable import WAF

let crsBase = "/usr/share/modsecurity-crs/rules"

func load(_ text: String) throws -> RuleSet {
    switch SecLang.load(text: text) {
    case .success(let rs): return rs
    case .failure(let e): throw e
    }
}

func run(_ rs: RuleSet, method: String = "GET", target: String, headers: [(String, String)] = [("Host", "localhost")], body: String? = nil,
         client: String = "127.0.0.1") -> Transaction {
    let tx = Transaction(ruleSet: rs, requestID: "t1", clientAddress: client)
    var h = headers
    if let body, !h.contains(where: { $0.0.lowercased() == "content-type" }) { h.append(("Content-Type", "application/x-www-form-urlencoded")) }
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
        #expect(Transform.base64Decode.apply(Array("aGVsbG8=".utf8)) == Array("hello".utf8))
        #expect(Transform.compressWhitespace.apply(Array("a \t\n b".utf8)) == Array("a b".utf8))
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
    }
}

@Suite struct EvaluationTests {
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
        if case .success(let rs) = SecLang.load(files: ["/work/main/filters/waf/base.conf"]) { return rs }
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
