import Config
import EventLoop
import OutriderCore
import Telemetry
import Testing
@testable import Filters

private let second: UInt64 = 1_000_000_000

private func rules(_ text: String, file: String = "rules.yaml", scope: LimitScope = .local) throws -> RuleSet {
    switch RuleFileParser.parse(text: text, file: file, defaultScope: scope) {
    case .success(let s): return s
    case .failure(let e): throw e
    }
}

private func errors(_ text: String, file: String = "rules.yaml") -> [ConfigDiagnostic] {
    switch RuleFileParser.parse(text: text, file: file) {
    case .success: return []
    case .failure(let e): return e.diagnostics
    }
}

private func facts(_ addr: String = "10.0.0.1", method: String = "GET", path: String = "/", headers: [(String, String)] = [],
                   peer: String? = nil) -> RequestFacts {
    var h = HTTPHeaders()
    for (k, v) in headers { h.add(name: k, value: v) }
    return RequestFacts(remoteAddress: addr, method: method, path: Substring(path), headers: h, peerIdentity: peer)
}

private func matched(_ sets: [RuleSet], _ f: RequestFacts) -> [MatchedLimit] {
    var out: [MatchedLimit] = []
    DescriptorMatcher.match(sets, f, into: &out)
    return out
}

// MARK: - buckets under a fake clock

@Suite struct TokenBucketTests {
    @Test func burstThenExactlyOneTokenPerEmissionInterval() throws {
        let limit = try #require(BucketLimit(requestsPerUnit: 10, unitNanos: second, burst: 10))
        let table = LocalBucketTable(maxKeys: 64, epoch: 0, evictions: nil)
        let t0: UInt64 = 1_000 * second
        var allowed = 0
        for _ in 0..<25 where table.take(hash: 42, now: t0, limit: limit).allowed { allowed += 1 }
        #expect(allowed == 10)
        // 99 ms later: still nothing (one token takes 100 ms).
        #expect(!table.take(hash: 42, now: t0 + 99_000_000, limit: limit).allowed)
        // 100 ms: exactly one.
        #expect(table.take(hash: 42, now: t0 + 100_000_000, limit: limit).allowed)
        #expect(!table.take(hash: 42, now: t0 + 100_000_000, limit: limit).allowed)
        // One second after the burst: ten more, not eleven.
        var later = 0
        for _ in 0..<20 where table.take(hash: 42, now: t0 + 1_100_000_000, limit: limit).allowed { later += 1 }
        #expect(later == 10)
    }

    @Test func steadyRateOverManySecondsIsExact() throws {
        let limit = try #require(BucketLimit(requestsPerUnit: 200, unitNanos: second, burst: 200))
        let table = LocalBucketTable(maxKeys: 64, epoch: 0, evictions: nil)
        // 1000 requests per second for 10 s, evenly spaced: burst + 200/s.
        var allowed = 0
        var now: UInt64 = 5 * second
        for _ in 0..<10_000 {
            if table.take(hash: 7, now: now, limit: limit).allowed { allowed += 1 }
            now += 1_000_000
        }
        #expect(allowed == 200 + 200 * 10 - 1 || allowed == 200 + 200 * 10)
    }

    @Test func remainingResetAndRetryAfter() throws {
        let limit = try #require(BucketLimit(requestsPerUnit: 2, unitNanos: second, burst: 3))
        let table = LocalBucketTable(maxKeys: 64, epoch: 0, evictions: nil)
        let t: UInt64 = 10 * second
        let a = table.take(hash: 1, now: t, limit: limit)
        #expect(a.allowed && a.remaining == 2 && a.resetNanos == second / 2)
        _ = table.take(hash: 1, now: t, limit: limit)
        let c = table.take(hash: 1, now: t, limit: limit)
        #expect(c.allowed && c.remaining == 0)
        let d = table.take(hash: 1, now: t, limit: limit)
        #expect(!d.allowed && d.retryAfterNanos == second / 2)
    }

    @Test func keysAreIndependentAndBoundedWithEvictions() throws {
        let registry = MetricsRegistry()
        let ev = registry.counter("ev", help: "").labels()
        let limit = try #require(BucketLimit(requestsPerUnit: 1, unitNanos: 60 * second, burst: 1))
        let table = LocalBucketTable(maxKeys: 64, epoch: 0, evictions: ev)
        #expect(table.take(hash: 1, now: second, limit: limit).allowed)
        #expect(table.take(hash: 2, now: second, limit: limit).allowed)
        #expect(!table.take(hash: 1, now: second, limit: limit).allowed)
        for k in 3..<10_000 { _ = table.take(hash: UInt64(k), now: second, limit: limit) }
        #expect(table.count <= 64)
        #expect(ev.value > 0)
    }

    @Test func theTableIsSharedAcrossThreadsWithoutLosingUpdates() async throws {
        let limit = try #require(BucketLimit(requestsPerUnit: 1000, unitNanos: 3600 * second, burst: 1000))
        let table = LocalBucketTable(maxKeys: 64, epoch: 0, evictions: nil)
        let counts = await withTaskGroup(of: Int.self) { g in
            for _ in 0..<4 {
                g.addTask {
                    var n = 0
                    for _ in 0..<1000 where table.take(hash: 99, now: second, limit: limit).allowed { n += 1 }
                    return n
                }
            }
            var total = 0
            for await n in g { total += n }
            return total
        }
        #expect(counts == 1000)
    }

    @Test func impossibleLimitsAreRejected() {
        #expect(BucketLimit(requestsPerUnit: 0, unitNanos: second, burst: 1) == nil)
        #expect(BucketLimit(requestsPerUnit: 1, unitNanos: 86_400 * second, burst: 100) == nil)
        #expect(BucketLimit(requestsPerUnit: 1, unitNanos: second, burst: UInt64.max) == nil)
    }
}

// MARK: - descriptors

@Suite struct DescriptorTests {
    @Test func oneBucketPerClientAddress() throws {
        let set = try rules("""
            domain: inbound
            descriptors:
              - key: remote_address
                rate_limit: {unit: second, requests_per_unit: 200}
            """)
        let a = matched([set], facts("10.0.0.1"))
        let b = matched([set], facts("10.0.0.2"))
        #expect(a.count == 1 && a[0].values == ["10.0.0.1"] && b[0].values == ["10.0.0.2"])
        #expect(a[0].limit.descriptorLabel == "remote_address")
        #expect(a[0].limit.requestsPerUnit == 200 && a[0].limit.burst == 200 && a[0].limit.scope == .local)
    }

    @Test func hierarchicalDescriptorsPreferExactValueThenPrefixThenAny() throws {
        let set = try rules("""
            domain: api
            sources:
              tenant: {header: X-Tenant}
            descriptors:
              - key: path_prefix
                value: /api
                descriptors:
                  - key: remote_address
                    rate_limit: {unit: minute, requests_per_unit: 60}
              - key: path_prefix
                value: /api/admin
                rate_limit: {unit: second, requests_per_unit: 1}
              - key: tenant
                value: gold
                rate_limit: {unit: second, requests_per_unit: 1000}
              - key: tenant
                rate_limit: {unit: second, requests_per_unit: 10}
              - key: method
                value: POST
                rate_limit: {unit: second, requests_per_unit: 5}
            """)
        let api = matched([set], facts("10.0.0.9", path: "/api/users"))
        #expect(api.map(\.limit.descriptorLabel) == ["path_prefix_/api.remote_address"])
        #expect(api[0].values == ["/api", "10.0.0.9"])
        let admin = matched([set], facts(path: "/api/admin/x"))
        #expect(admin.map(\.limit.descriptorLabel) == ["path_prefix_/api/admin"])
        let gold = matched([set], facts(path: "/", headers: [("x-tenant", "gold")]))
        #expect(gold.map(\.limit.requestsPerUnit) == [1000])
        let other = matched([set], facts(path: "/", headers: [("X-Tenant", "tin")]))
        #expect(other.map(\.limit.requestsPerUnit) == [10] && other[0].values == ["tin"])
        #expect(matched([set], facts(path: "/")).isEmpty)
        let post = matched([set], facts(method: "POST", path: "/x"))
        #expect(post.map(\.limit.descriptorLabel) == ["method_POST"])
    }

    @Test func peerIdentityAndGenericKey() throws {
        let set = try rules("""
            domain: mesh
            descriptors:
              - key: peer_identity
                rate_limit: {unit: second, requests_per_unit: 50}
              - key: generic_key
                value: everyone
                rate_limit: {unit: second, requests_per_unit: 5000}
            """)
        #expect(matched([set], facts()).map(\.limit.descriptorLabel) == ["generic_key_everyone"])
        let m = matched([set], facts(peer: "spiffe://example.org/ns/a/sa/b"))
        #expect(m.map(\.limit.descriptorLabel) == ["peer_identity", "generic_key_everyone"])
        #expect(m[0].values == ["spiffe://example.org/ns/a/sa/b"])
    }

    @Test func replacesDropsTheNamedLimit() throws {
        let set = try rules("""
            domain: d
            descriptors:
              - key: remote_address
                rate_limit: {unit: second, requests_per_unit: 10, name: per_ip}
              - key: method
                value: GET
                rate_limit: {unit: second, requests_per_unit: 100, replaces: [{name: per_ip}]}
            """)
        #expect(matched([set], facts(method: "GET")).map(\.limit.descriptorLabel) == ["method_GET"])
        #expect(matched([set], facts(method: "PUT")).map(\.limit.descriptorLabel) == ["remote_address"])
    }

    @Test func forwardedForIsUsedOnlyWhenTrusted() {
        var h = HTTPHeaders()
        h.add(name: "X-Forwarded-For", value: " 203.0.113.7 , 10.0.0.1")
        #expect(RequestFacts.clientAddress(peer: "127.0.0.1", headers: h, useForwardedFor: true) == "203.0.113.7")
        #expect(RequestFacts.clientAddress(peer: "127.0.0.1", headers: h, useForwardedFor: false) == "127.0.0.1")
        #expect(RequestFacts.clientAddress(peer: "127.0.0.1", headers: HTTPHeaders(), useForwardedFor: true) == "127.0.0.1")
    }
}

// MARK: - rule files

@Suite struct RuleFileTests {
    @Test func envoyproxyRatelimitConfigIsAccepted() throws {
        // From envoyproxy/ratelimit's README, with `sources` mapping its keys to headers.
        let set = try rules("""
            domain: mongo_cps
            sources:
              database: {header: x-database}
              message_type: {header: x-message-type}
              key2: {header: x-key2}
              key1: {header: x-key1}
            descriptors:
              - key: database
                value: users
                rate_limit:
                  unit: second
                  requests_per_unit: 500

              - key: database
                value: default
                rate_limit:
                  unit: second
                  requests_per_unit: 500
              - key: message_type
                value: marketing
                descriptors:
                  - key: remote_address
                    rate_limit:
                      unit: day
                      requests_per_unit: 5
                    shadow_mode: true
              - key: key1
                value: value1
                descriptors:
                  - key: key2
                    value: value2
                    rate_limit:
                      unlimited: true
                      name: unl
                    detailed_metric: true
            """, scope: .global)
        #expect(set.domain == "mongo_cps")
        #expect(set.limits.count == 4)
        #expect(set.limits[2].shadow && set.limits[2].unit == .day && set.limits[2].scope == .global)
        #expect(set.limits[3].unlimited)
        let m = matched([set], facts(headers: [("x-message-type", "marketing")]))
        #expect(m.map(\.limit.descriptorLabel) == ["message_type_marketing.remote_address"])
    }

    @Test func errorsCarryTheirLine() {
        let e = errors("""
            domain: inbound
            descriptors:
              - key: remote_address
                rate_limit:
                  unit: fortnight
                  requests_per_unit: 200
              - key: api_key
                rate_limit: {unit: second, requests_per_unit: -1}
            """, file: "r.yaml")
        #expect(e.contains { $0.line == 5 && $0.message.contains("unit must be") && $0.file == "r.yaml" })
        #expect(e.contains { $0.line == 7 && $0.message.contains("no source") })
        #expect(e.count == 2)
    }

    @Test func badValuesAndUnknownKeysAreReportedAtTheirLines() {
        let e = errors("""
            domain: d
            descriptors:
              - key: remote_address
                rate_limit: {unit: second, requests_per_unit: 0}
              - key: remote_address
                rate_limit: {unit: second, requests_per_unit: 5}
              - key: method
                value: GET
                rat_limit: {unit: second, requests_per_unit: 5}
            extra: 1
            """)
        #expect(e.contains { $0.line == 4 && $0.message.contains("requests_per_unit") })
        #expect(e.contains { $0.line == 5 && $0.message.contains("duplicate") })
        #expect(e.contains { $0.line == 9 && $0.message.contains("unknown key 'rat_limit'") })
        #expect(e.contains { $0.line == 10 && $0.message.contains("unknown key 'extra'") })
    }

    @Test func yamlSyntaxErrorsAndMissingPartsAreRejected() {
        #expect(errors("domain: [\n").first?.line ?? 0 >= 1)
        #expect(errors("descriptors: []\n").contains { $0.message.contains("domain") })
        #expect(!errors("").isEmpty)
        #expect(errors("domain: d\ndescriptors:\n  - key: path_prefix\n    rate_limit: {unit: second, requests_per_unit: 1}\n")
            .contains { $0.line == 3 && $0.message.contains("path_prefix needs") })
    }

    @Test func burstIsLocalOnly() {
        let e = errors("domain: d\nscope: global\ndescriptors:\n  - key: remote_address\n    rate_limit: {unit: second, requests_per_unit: 5, burst: 9}\n")
        #expect(e.contains { $0.line == 5 && $0.message.contains("burst") })
    }

    @Test func filterEntryResolvesRulesAndNeedsRedisForGlobalLimits() throws {
        let dir = "/tmp/outrider-rl-test-\(UInt64.random(in: 0...UInt64.max))"
        try writeFile("\(dir)/rules/g.yaml", "domain: g\nscope: global\ndescriptors:\n  - key: remote_address\n    rate_limit: {unit: second, requests_per_unit: 5}\n")
        let entryNode = ConfigNode(value: .map([
            (key: "name", value: ConfigNode(value: .string("ratelimit"))),
            (key: "rules", value: ConfigNode(value: .string("rules/g.yaml"), line: 4)),
        ]), file: "\(dir)/outrider.yaml", line: 3)
        let entry = FilterEntry(name: "ratelimit", settings: entryNode, file: "\(dir)/outrider.yaml", line: 3)
        #expect(RateLimitFilterBuilder.watchedFiles(entry) == ["\(dir)/rules/g.yaml"])
        let e = RateLimitFilterBuilder.validate(entry, environment: [:])
        #expect(e.contains { $0.file == "\(dir)/rules/g.yaml" && $0.line == 5 && $0.message.contains("needs Redis") })
        #expect(RateLimitFilterBuilder.validate(entry, environment: ["REDIS_URL": "redis://127.0.0.1:6390"]).isEmpty)
        switch RateLimitFilterBuilder.parse(entry, environment: ["REDIS_URL": "127.0.0.1:6390"]) {
        case .success(let s): #expect(s.redis?.port == 6390 && s.redis?.failureDeny == false && s.redis?.timeoutNanos == 50_000_000)
        case .failure(let e): Issue.record("unexpected \(e)")
        }
    }
}

// MARK: - responses

@Suite struct ResponseHeaderTests {
    @Test func tooManyRequestsCarriesRetryAfterAndDraft03AndIETFHeaders() throws {
        let set = try rules("domain: d\ndescriptors:\n  - key: remote_address\n    rate_limit: {unit: minute, requests_per_unit: 60, name: per_ip}\n")
        let s = LimitStatus(limit: set.limits[0], allowed: false, remaining: 0, resetNanos: 1_500_000_000, retryAfterNanos: 1_500_000_000)
        let r = RateLimitFilter.reply(s, style: .both)
        #expect(r.status == 429 && r.responseFlags == "RL" && r.details == "rate_limited")
        #expect(r.headers.first("retry-after") == "2")
        #expect(r.headers.first("x-ratelimit-limit") == "60, 60;w=60")
        #expect(r.headers.first("x-ratelimit-remaining") == "0")
        #expect(r.headers.first("x-ratelimit-reset") == "2")
        #expect(r.headers.first("ratelimit-policy") == "\"per_ip\";q=60;w=60")
        #expect(r.headers.first("ratelimit") == "\"per_ip\";r=0;t=2")
    }
}

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

private struct TestFileError: Error {}

#if canImport(Glibc)
import Glibc
#endif
