#if canImport(Glibc)
import Glibc
#endif
import Config
import EventLoop
import OutriderCore
import Telemetry
import Testing
@testable import Filters

// MARK: - helpers

/// As in Tests/FiltersTests/FilterChainTests.swift, with the peer identity set.
private func makeContext(identity: String? = nil) throws -> StreamContext {
    let loop = try EventLoop(index: 0)
    let ctx = StreamContext(requestID: "req-1", clientAddress: "127.0.0.1", clientPort: 40000, listenerName: "inbound",
                            serverAddress: SocketAddressSpec(host: "127.0.0.1", port: 15006),
                            upstreamAddress: SocketAddressSpec(host: "127.0.0.1", port: 8080), scheme: "https",
                            shard: 0, startWallNanos: 1_000, worker: WorkerServices(loop: loop, shard: 0, random: FastRandom()))
    ctx.peerIdentity = identity
    return ctx
}

private func request(_ method: String = "GET", _ target: String = "/") -> RequestHead {
    RequestHead(method: method, target: target, version: .http11, headers: HTTPHeaders([("Host", "example")]))
}

private func policy(_ text: String, file: String = "policy.yaml") throws -> MTLSPolicy {
    switch MTLSPolicyParser.parse(text: text, file: file) {
    case .success(let p): return p
    case .failure(let e): throw e
    }
}

private func errors(_ text: String, file: String = "policy.yaml") -> [ConfigDiagnostic] {
    switch MTLSPolicyParser.parse(text: text, file: file) {
    case .success: return []
    case .failure(let e): return e.diagnostics
    }
}

private func factory(_ text: String, mode: FilterMode = .enforce, registry: MetricsRegistry = MetricsRegistry()) throws -> MTLSFactory {
    let p = try policy(text)
    return MTLSFactory(mode: mode, settings: MTLSSettings(policyFile: "policy.yaml", policy: p), metrics: registry)
}

/// Runs the filter alone: nil when it proceeds, the reply when it answers.
private func run(_ f: MTLSFactory, identity: String?, _ method: String = "GET", _ target: String = "/") throws -> LocalReply? {
    let ctx = try makeContext(identity: identity)
    let filter = try #require(f.makeFilter(context: ctx))
    var head = request(method, target)
    switch try filter.requestHead(&head, context: ctx) {
    case .proceed: return nil
    case .respond(let r): return r
    case .pause: Issue.record("mtls never pauses"); return nil
    }
}

private func allowed(_ p: MTLSPolicy, _ id: String?, _ method: String = "GET", _ target: String = "/") -> Bool {
    p.evaluate(identity: id, method: method, target: target).allowed
}

private let web = "spiffe://cluster.local/ns/default/sa/web"
private let legacy = "spiffe://cluster.local/ns/default/sa/legacy"
private let other = "spiffe://cluster.local/ns/other/sa/api"

private struct TestFileError: Error {}

private func writeFile(_ path: String, _ text: String) throws {
    let dir = String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
    _ = dir.split(separator: "/").reduce("") { acc, part in
        let p = acc + "/" + part
        _ = mkdir(p, 0o755)
        return p
    }
    guard let f = fopen(path, "w") else { throw TestFileError() }
    _ = text.withCString { fputs($0, f) }
    fclose(f)
}

private func tempDir() -> String { "/tmp/outrider-mtls-test-\(UInt64.random(in: 0...UInt64.max))" }

// MARK: - evaluation

@Suite struct MTLSEvaluationTests {
    @Test func denyRulesWinOverAllowRulesWhateverTheirOrder() throws {
        let p = try policy("""
            rules:
              - name: allow-default-ns
                action: ALLOW
                from: {principals: ["spiffe://cluster.local/ns/default/*"]}
              - name: deny-legacy
                action: DENY
                from: {principals: ["\(legacy)"]}
            """)
        #expect(p.evaluate(identity: legacy, method: "GET", target: "/") == .deniedBy(1))
        #expect(p.evaluate(identity: web, method: "GET", target: "/") == .allowedBy(0))
    }

    @Test func emptyOrAbsentAllowListAllowsEverythingNotDenied() throws {
        for text in ["", "# only comments\n", "rules: []\n", "rules:\n"] {
            let p = try policy(text)
            #expect(p.evaluate(identity: nil, method: "DELETE", target: "/x") == .allowedByDefault)
            #expect(p.evaluate(identity: web, method: "GET", target: "/") == .allowedByDefault)
        }
        let onlyDeny = try policy("rules:\n  - name: d\n    action: DENY\n    to: {paths: [\"/admin/*\"]}\n")
        #expect(onlyDeny.evaluate(identity: web, method: "GET", target: "/api") == .allowedByDefault)
        #expect(onlyDeny.evaluate(identity: web, method: "GET", target: "/admin/x") == .deniedBy(0))
    }

    @Test func presentAllowListDeniesByDefault() throws {
        let p = try policy("rules:\n  - name: a\n    action: ALLOW\n    from: {principals: [\"\(web)\"]}\n")
        #expect(p.evaluate(identity: web, method: "GET", target: "/") == .allowedBy(0))
        #expect(p.evaluate(identity: other, method: "GET", target: "/") == .deniedByDefault)
        #expect(p.evaluate(identity: nil, method: "GET", target: "/") == .deniedByDefault)
    }

    @Test func starSuffixMatchesByPrefixOnly() throws {
        let p = try policy("rules:\n  - name: ns\n    action: ALLOW\n    from: {principals: [\"spiffe://cluster.local/ns/default/*\"]}\n")
        #expect(allowed(p, web))
        #expect(allowed(p, "spiffe://cluster.local/ns/default/sa/a/b"))
        #expect(!allowed(p, other))
        #expect(!allowed(p, "spiffe://cluster.local/ns/default-evil/sa/x"))
        #expect(!allowed(p, "spiffe://cluster.local/ns/default"))
        #expect(!allowed(p, "spiffe://evil.local/ns/default/sa/web"))
        #expect(!allowed(p, nil))
        let exact = try policy("rules:\n  - name: one\n    action: ALLOW\n    from: {principals: [\"\(web)\"]}\n")
        #expect(allowed(exact, web))
        #expect(!allowed(exact, web + "x"))
        #expect(!allowed(exact, web + "/sub"))
    }

    @Test func anyAuthenticatedAndUnauthenticated() throws {
        let p = try policy("""
            rules:
              - name: authenticated
                action: ALLOW
                from: {principals: ["*"]}
              - name: probes
                action: ALLOW
                from: {principals: [unauthenticated]}
                to: {methods: [GET], paths: ["/healthz"]}
            """)
        #expect(p.evaluate(identity: other, method: "POST", target: "/x") == .allowedBy(0))
        #expect(p.evaluate(identity: nil, method: "GET", target: "/healthz") == .allowedBy(1))
        #expect(p.evaluate(identity: "", method: "GET", target: "/healthz") == .allowedBy(1))
        #expect(p.evaluate(identity: nil, method: "GET", target: "/x") == .deniedByDefault)
        // Istio's spelling of "no identity": notPrincipals ["*"].
        let istio = try policy("rules:\n  - name: no-id\n    action: DENY\n    from: {notPrincipals: [\"*\"]}\n")
        #expect(istio.evaluate(identity: nil, method: "GET", target: "/") == .deniedBy(0))
        #expect(istio.evaluate(identity: web, method: "GET", target: "/") == .allowedByDefault)
        // A rule naming principals never matches a request without identity.
        let named = try policy("rules:\n  - name: d\n    action: DENY\n    from: {notPrincipals: [\"\(web)\"]}\n    to: {paths: [\"/admin/*\"]}\n")
        #expect(named.evaluate(identity: nil, method: "GET", target: "/admin/x") == .deniedBy(0))
        #expect(named.evaluate(identity: web, method: "GET", target: "/admin/x") == .allowedByDefault)
    }

    @Test func methodListsAndNotMethods() throws {
        let p = try policy("""
            rules:
              - name: reads
                action: ALLOW
                to: {methods: [GET, HEAD]}
              - name: no-delete
                action: DENY
                to: {notMethods: [GET, HEAD, POST, PUT, OPTIONS]}
            """)
        #expect(allowed(p, web, "GET"))
        #expect(allowed(p, nil, "HEAD"))
        #expect(!allowed(p, web, "POST"))
        #expect(p.evaluate(identity: web, method: "DELETE", target: "/") == .deniedBy(1))
        #expect(!allowed(p, web, "get"))
    }

    @Test func pathPrefixExactSuffixAndNotPaths() throws {
        let p = try policy("""
            rules:
              - name: api
                action: ALLOW
                to: {paths: ["/api/*", "/healthz", "*.css"], notPaths: ["/api/internal/*"]}
            """)
        #expect(allowed(p, web, "GET", "/api/users"))
        #expect(allowed(p, web, "GET", "/api/"))
        #expect(!allowed(p, web, "GET", "/api"))
        #expect(!allowed(p, web, "GET", "/apix"))
        #expect(allowed(p, web, "GET", "/healthz"))
        #expect(allowed(p, web, "GET", "/healthz?full=1"))
        #expect(!allowed(p, web, "GET", "/healthz/x"))
        #expect(allowed(p, web, "GET", "/static/site.css"))
        #expect(!allowed(p, web, "GET", "/api/internal/keys"))
        #expect(!allowed(p, web, "GET", "/other"))
    }

    @Test func fromAndToAreAndedListsAreOred() throws {
        let p = try policy("""
            rules:
              - name: web-writes-api
                action: ALLOW
                from: {principals: ["\(web)", "\(legacy)"]}
                to: {methods: [POST], paths: ["/api/*"]}
            """)
        #expect(allowed(p, web, "POST", "/api/x"))
        #expect(allowed(p, legacy, "POST", "/api/x"))
        #expect(!allowed(p, web, "GET", "/api/x"))
        #expect(!allowed(p, web, "POST", "/other"))
        #expect(!allowed(p, other, "POST", "/api/x"))
    }

    @Test func istioListShapeIsAccepted() throws {
        let p = try policy("""
            rules:
              - name: deny-frontend
                action: DENY
                from:
                  - source: {principals: ["\(web)"]}
                  - source: {principals: ["\(legacy)"]}
                to:
                  - operation: {methods: [DELETE]}
                  - operation: {paths: ["/internal/*"]}
            """)
        #expect(p.evaluate(identity: legacy, method: "DELETE", target: "/x") == .deniedBy(0))
        #expect(p.evaluate(identity: web, method: "GET", target: "/internal/a") == .deniedBy(0))
        #expect(p.evaluate(identity: web, method: "GET", target: "/x") == .allowedByDefault)
        #expect(p.evaluate(identity: other, method: "DELETE", target: "/x") == .allowedByDefault)
    }

    @Test func pathsAreNormalizedBeforeMatchingSoDenyRulesCannotBeSidestepped() throws {
        let p = try policy("rules:\n  - name: admin\n    action: DENY\n    to: {paths: [\"/admin/*\", \"/admin\"]}\n")
        for target in ["/admin", "//admin", "/./admin", "/x/../admin", "/%61dmin", "/%61dmin/", "/admin/./x", "///admin//x",
                       "http://host:8080/admin/x", "http://host/admin?x=1", "/admin#frag", "/x/%2E%2E/admin"] {
            #expect(p.evaluate(identity: web, method: "GET", target: target) != .allowedByDefault, "target \(target)")
        }
        for target in ["/", "/administrator", "/public/admin", "*", "http://host", "/admin%2Fx"] {
            #expect(p.evaluate(identity: web, method: "GET", target: target) == .allowedByDefault, "target \(target)")
        }
        #expect(MTLSPath.normalized(target: "/a/b/../../..") == "/")
        #expect(MTLSPath.normalized(target: "/a%2fb%7e") == "/a%2Fb~")
        #expect(MTLSPath.normalized(target: "/a/%zz%") == "/a/%zz%")
        #expect(MTLSPath.normalized(target: "") == "")
        #expect(MTLSPath.normalized(target: "http://h?q") == "/")
    }
}

// MARK: - the filter

@Suite struct MTLSFilterTests {
    @Test func deniedRequestGets403WithTheRuleAndUAEXAndASpanEvent() throws {
        let registry = MetricsRegistry()
        let f = try factory("rules:\n  - name: deny-legacy\n    action: DENY\n    from: {principals: [\"\(legacy)\"]}\n", registry: registry)
        let ctx = try makeContext(identity: legacy)
        let filter = try #require(f.makeFilter(context: ctx))
        var head = request("GET", "/x")
        guard case .respond(let r) = try filter.requestHead(&head, context: ctx) else { Issue.record("expected 403"); return }
        #expect(r.status == 403)
        #expect(r.details == "mtls_denied")
        #expect(r.responseFlags == "UAEX")
        #expect(r.body.contains("deny-legacy"))
        let event = try #require(ctx.spanEvents.first)
        #expect(event.name == "mtls.denied")
        #expect(event.attributes.contains(SpanAttribute("mtls.rule", .string("deny-legacy"))))
        #expect(event.attributes.contains(SpanAttribute("mtls.principal", .string(legacy))))
        let text = registry.render()
        #expect(text.contains("outrider_mtls_decisions_total{rule=\"deny-legacy\",action=\"DENY\",result=\"denied\"} 1"))
        #expect(registry.conflicts.isEmpty)
    }

    @Test func defaultDenyNamesNoRuleAndCountsAsDefault() throws {
        let registry = MetricsRegistry()
        let f = try factory("rules:\n  - name: web\n    action: ALLOW\n    from: {principals: [\"\(web)\"]}\n", registry: registry)
        #expect(try run(f, identity: web) == nil)
        let r = try #require(try run(f, identity: other))
        #expect(r.status == 403 && r.body.contains("no allow rule matched"))
        let text = registry.render()
        #expect(text.contains("outrider_mtls_decisions_total{rule=\"web\",action=\"ALLOW\",result=\"allowed\"} 1"))
        #expect(text.contains("outrider_mtls_decisions_total{rule=\"default\",action=\"DENY\",result=\"denied\"} 1"))
    }

    @Test func requestsWithoutIdentityAreCounted() throws {
        let registry = MetricsRegistry()
        let f = try factory("rules: []\n", registry: registry)
        #expect(try run(f, identity: nil) == nil)
        #expect(try run(f, identity: "") == nil)
        #expect(try run(f, identity: web) == nil)
        let text = registry.render()
        #expect(text.contains("outrider_mtls_unauthenticated_requests_total 2"))
        #expect(text.contains("outrider_mtls_decisions_total{rule=\"default\",action=\"ALLOW\",result=\"allowed\"} 3"))
    }

    @Test func noIdentityIsDeniedByARequireIdentityRule() throws {
        let f = try factory("rules:\n  - name: require-identity\n    action: DENY\n    from: {principals: [unauthenticated]}\n")
        let r = try #require(try run(f, identity: nil))
        #expect(r.status == 403 && r.body.contains("require-identity"))
        #expect(try run(f, identity: web) == nil)
    }

    @Test func shadowModeAnswersButTheChainProceedsAndCountsShadowDenied() throws {
        let registry = MetricsRegistry()
        let f = try factory("rules:\n  - name: deny-all\n    action: DENY\n", mode: .shadow, registry: registry)
        // The filter itself still says what it would do…
        let r = try #require(try run(f, identity: web))
        #expect(r.status == 403)
        // …and the chain turns it into proceed.
        let chain = FilterChain(factories: [f], metrics: registry)
        let instance = try #require(chain.makeInstance(context: try makeContext(identity: web)))
        var head = request()
        guard case .proceed = instance.requestHead(&head) else { Issue.record("shadow mode must not answer"); return }
        let text = registry.render()
        #expect(text.contains("outrider_mtls_decisions_total{rule=\"deny-all\",action=\"DENY\",result=\"shadow_denied\"} 2"))
        #expect(!text.contains("result=\"denied\""))
        #expect(text.contains("outrider_filter_shadow_would_respond_total{filter=\"mtls\",status=\"403\"} 1"))
        #expect(instance.context.spanEvents.first?.attributes.contains(SpanAttribute("mtls.shadow", .bool(true))) == true)
    }

    @Test func enforcedChainAnswers403() throws {
        let registry = MetricsRegistry()
        let f = try factory("rules:\n  - name: deny-all\n    action: DENY\n", registry: registry)
        let chain = FilterChain(factories: [f], metrics: registry)
        let instance = try #require(chain.makeInstance(context: try makeContext(identity: nil)))
        var head = request()
        guard case .respond(let r) = instance.requestHead(&head) else { Issue.record("expected 403"); return }
        #expect(r.status == 403)
        #expect(registry.render().contains("outrider_filter_local_replies_total{filter=\"mtls\",status=\"403\"} 1"))
    }
}

// MARK: - policy file errors

@Suite struct MTLSPolicyErrorTests {
    @Test func unknownKeysAreReportedAtTheirLine() {
        let e = errors("""
            rules:
              - name: a
                action: ALLOW
                when: [{key: x}]
                from:
                  principals: ["\(web)"]
                  namespaces: [default]
                to:
                  hosts: [example.com]
            """)
        #expect(e.contains { $0.line == 4 && $0.message.contains("unknown key 'when'") })
        #expect(e.contains { $0.line == 7 && $0.message.contains("unknown key 'namespaces'") })
        #expect(e.contains { $0.line == 9 && $0.message.contains("unknown key 'hosts'") })
        #expect(errors("rule: []\n").contains { $0.line == 1 && $0.message.contains("unknown key 'rule'") })
    }

    @Test func badActionAndMissingNameOrAction() {
        let e = errors("rules:\n  - name: a\n    action: AUDIT\n  - action: DENY\n  - name: c\n")
        #expect(e.contains { $0.line == 3 && $0.message.contains("action must be ALLOW or DENY") })
        #expect(e.contains { $0.line == 4 && $0.message.contains("needs a `name:`") })
        #expect(e.contains { $0.line == 5 && $0.message.contains("needs an `action:`") })
    }

    @Test func duplicateAndReservedNames() {
        let e = errors("rules:\n  - name: a\n    action: DENY\n  - name: a\n    action: ALLOW\n  - name: default\n    action: ALLOW\n  - name: 'a b'\n    action: ALLOW\n")
        #expect(e.contains { $0.line == 4 && $0.message.contains("duplicate rule name 'a' (first at line 2)") })
        #expect(e.contains { $0.line == 6 && $0.message.contains("reserved") })
        #expect(e.contains { $0.line == 8 && $0.message.contains("name must be") })
    }

    @Test func principalsMustBeSPIFFEIds() {
        func lineError(_ principal: String) -> ConfigDiagnostic? {
            errors("rules:\n  - name: a\n    action: ALLOW\n    from:\n      principals:\n        - \"\(principal)\"\n").first
        }
        for bad in ["", "cluster.local/ns/default/sa/web", "https://cluster.local/x", "spiffe://", "spiffe://cluster.local",
                    "spiffe://cluster.local/", "spiffe:///ns/x", "spiffe://Cluster.local/ns/x", "spiffe://cluster.local/ns//x",
                    "spiffe://cluster.local/ns/../x", "spiffe://cluster.local/ns/x/", "spiffe://cluster.local/ns x",
                    "spiffe://cluster.local*", "spiffe://*", "spiffe://cluster.local/*/sa/x", "*spiffe://cluster.local/x",
                    "spiffe://cluster.local/ns/%41"] {
            let d = lineError(bad)
            #expect(d?.line == 6, "principal '\(bad)' must be refused at line 6, got \(String(describing: d))")
        }
        #expect(lineError("")?.message.contains("empty principal") == true)
        #expect(lineError("cluster.local/ns/default/sa/web")?.message.contains("did you mean 'spiffe://cluster.local/ns/default/sa/web'") == true)
        for good in ["spiffe://cluster.local/ns/default/sa/web", "spiffe://cluster.local/*", "spiffe://cluster.local/ns/default/*",
                     "spiffe://example.org/sa/reader-*", "*", "unauthenticated", "spiffe://td_1.x-y/A.b-c_d"] {
            #expect(lineError(good) == nil, "principal '\(good)' must be accepted")
        }
    }

    @Test func methodsAndPathsAreChecked() {
        let e = errors("""
            rules:
              - name: a
                action: ALLOW
                to:
                  methods: [get, "G T", POST]
                  paths: ["api/*", "/a/*/b", "/a//b", "/a/../b", "/%61", "/ok/*", "*.js", "/q?x"]
              - name: b
                action: DENY
                to: {methods: []}
              - name: c
                action: DENY
                from: {principals: "\(web)"}
            """)
        #expect(e.contains { $0.line == 5 && $0.message.contains("write 'GET'") })
        #expect(e.contains { $0.line == 5 && $0.message.contains("'G T' is not an HTTP method") })
        #expect(e.filter { $0.line == 6 }.count == 6)
        #expect(e.contains { $0.line == 9 && $0.message.contains("empty list") })
        #expect(e.contains { $0.line == 12 && $0.message.contains("principals must be a list") })
        #expect(errors("rules:\n  - name: a\n    action: ALLOW\n    to: {paths: [\"/.*\", \"/a/..*\"]}\n").isEmpty)
    }

    @Test func shapeErrors() {
        #expect(errors("- a\n- b\n").first?.line == 1)
        #expect(errors("rules: {name: a}\n").contains { $0.line == 1 && $0.message.contains("rules must be a list") })
        #expect(errors("rules:\n  - just-a-string\n").contains { $0.line == 2 })
        #expect(errors("rules:\n  - name: a\n    action: DENY\n    from: {}\n").contains { $0.line == 4 && $0.message.contains("from needs") })
        #expect(errors("rules:\n  - name: a\n    action: DENY\n    from:\n      - principals: [\"*\"]\n").contains { $0.line == 5 && $0.message.contains("{source: {…}}") })
        #expect(errors("rules:\n  - name: a\n    action: DENY\n    to: []\n").contains { $0.line == 4 })
        #expect(errors("rules: [\n").first.map { $0.line >= 1 } == true)
        #expect(errors("rules:\n  - name: a\n    action: DENY\n  - name: a\n    action: DENY\n").count == 1)
    }

    @Test func garbageNeverTraps() {
        let samples = ["\u{0}", "rules: [[[[]]]]", "rules:\n  - name: [a]\n    action: {x: 1}\n    from: 3\n    to: null\n",
                       "rules: &a [*a]", String(repeating: "[", count: 500), "rules:\n  - {name: x, action: deny, from: [{source: 1}]}\n",
                       "rules:\n  - {name: x, action: allow, to: [{operation: {paths: [1, 2]}}]}\n"]
        for s in samples { _ = errors(s) }
    }
}

// MARK: - config entry and files

@Suite struct MTLSConfigTests {
    @Test func theConfigShapeParsesAndThePolicyIsWatched() throws {
        let dir = tempDir()
        try writeFile("\(dir)/filters/mtls/policy.yaml", "rules:\n  - name: web\n    action: ALLOW\n    from: {principals: [\"\(web)\"]}\n")
        let yaml = """
            listeners:
              - name: inbound
                address: 127.0.0.1:15006
                upstream: 127.0.0.1:8080
            filters:
              - name: mtls
                mode: enforce
                policy: filters/mtls/policy.yaml
            """
        let config = try ConfigLoader.parse(text: yaml, file: "\(dir)/outrider.yaml", environment: [:])
        let entry = try #require(config.filters.first)
        #expect(entry.name == "mtls" && entry.mode == .enforce)
        #expect(FilterRegistry.available.contains("mtls"))
        #expect(FilterRegistry.validate(config.filters, environment: [:]).isEmpty)
        #expect(FilterRegistry.watchedFiles(config.filters) == ["\(dir)/filters/mtls/policy.yaml"])
        let chain = try FilterRegistry.buildChain(config.filters, context: FilterBuildContext(metrics: MetricsRegistry(), environment: [:], version: "test"))
        #expect(chain.factories.count == 1 && chain.factories[0].name == "mtls")
        let f = try #require(chain.factories[0] as? MTLSFactory)
        #expect(f.settings.policy.allowRules.count == 1)
    }

    @Test func entryErrorsPointAtOutriderYamlAndPolicyErrorsAtThePolicyFile() throws {
        let dir = tempDir()
        try writeFile("\(dir)/p.yaml", "rules:\n  - name: x\n    action: DENY\n    from: {principals: [\"\"]}\n")
        func entry(_ pairs: [(String, ConfigNode)]) -> FilterEntry {
            let node = ConfigNode(value: .map([(key: "name", value: ConfigNode(value: .string("mtls")))] + pairs.map { (key: $0.0, value: $0.1) }),
                                  file: "\(dir)/outrider.yaml", line: 7)
            return FilterEntry(name: "mtls", settings: node, file: "\(dir)/outrider.yaml", line: 7)
        }
        let missing = MTLSFilterBuilder.validate(entry([]), environment: [:])
        #expect(missing.contains { $0.file.hasSuffix("outrider.yaml") && $0.line == 7 && $0.message.contains("missing `policy:`") })
        let unknown = MTLSFilterBuilder.validate(entry([("policy", ConfigNode(value: .string("p.yaml"), line: 8)),
                                                        ("polcy", ConfigNode(value: .string("x"), line: 9))]), environment: [:])
        #expect(unknown.contains { $0.line == 9 && $0.message.contains("unknown key 'polcy'") })
        let bad = MTLSFilterBuilder.validate(entry([("policy", ConfigNode(value: .string("p.yaml"), line: 8))]), environment: [:])
        #expect(bad.count == 1)
        #expect(bad.first?.description == "\(dir)/p.yaml:4: principals: empty principal")
        let absent = MTLSFilterBuilder.validate(entry([("policy", ConfigNode(value: .string("nope.yaml"), line: 8))]), environment: [:])
        #expect(absent.contains { $0.file.hasSuffix("outrider.yaml") && $0.line == 8 && $0.message.contains("nope.yaml") })
        let notString = MTLSFilterBuilder.validate(entry([("policy", ConfigNode(value: .list([]), line: 8))]), environment: [:])
        #expect(notString.contains { $0.line == 8 && $0.message.contains("must be a file path") })
        #expect(MTLSFilterBuilder.watchedFiles(entry([("policy", ConfigNode(value: .string("/abs/p.yaml")))])) == ["/abs/p.yaml"])
    }

    @Test func shippedPolicyAndExamplesLoad() throws {
        let root = String(#filePath).components(separatedBy: "/Tests/MTLSFilterTests/")[0]
        let files = ["policy.yaml", "examples/namespace-isolation.yaml", "examples/require-identity.yaml", "examples/istio-shape.yaml"]
        for f in files {
            switch MTLSPolicyParser.load(path: "\(root)/filters/mtls/\(f)") {
            case .success(let p):
                if f == "policy.yaml" { #expect(p.rules.isEmpty, "the default policy allows all") }
                else { #expect(!p.rules.isEmpty, "\(f)") }
            case .failure(let e): Issue.record("\(f): \(e.diagnostics.map(\.description))")
            }
        }
        // The commented rules of the default policy are valid too.
        let text = try #require(readText("\(root)/filters/mtls/policy.yaml"))
        let uncommented = text.split(separator: "\n", omittingEmptySubsequences: false).compactMap { line -> String? in
            if line.hasPrefix("# rules:") { return "rules:" }
            if line.hasPrefix("#   ") { return String(line.dropFirst(2)) }
            if line.hasPrefix("rules: []") || line.hasPrefix("#") { return nil }
            return String(line)
        }.joined(separator: "\n")
        let p = try policy(uncommented)
        #expect(p.rules.count == 4)
        #expect(p.evaluate(identity: nil, method: "GET", target: "/healthz") == .allowedBy(3))
        #expect(p.evaluate(identity: "spiffe://cluster.local/ns/legacy/sa/x", method: "GET", target: "/api/x") == .deniedBy(0))
        let ns = try policy(try #require(readText("\(root)/filters/mtls/examples/require-identity.yaml")))
        #expect(!ns.evaluate(identity: nil, method: "GET", target: "/x").allowed)
        #expect(ns.evaluate(identity: nil, method: "GET", target: "/healthz").allowed)
        #expect(!ns.evaluate(identity: "spiffe://other.org/x", method: "GET", target: "/x").allowed)
        #expect(ns.evaluate(identity: web, method: "GET", target: "/x").allowed)
    }
}

private func readText(_ path: String) -> String? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buf.withUnsafeMutableBytes { fread($0.baseAddress, 1, 4096, f) }
        if n > 0 { bytes += buf[0..<n] }
        if n < 4096 { break }
    }
    return String(decoding: bytes, as: UTF8.self)
}
