import Config
import OutriderCore
import Telemetry

/// Counters of the rate-limit filter (prefix `outrider_ratelimit_`), resolved once per limit
/// so the request path never takes the registry's lock.
final class RateLimitMetrics: Sendable {
    struct PerLimit: Sendable {
        let allowed: Counter
        let limited: Counter
        let shadowLimited: Counter
    }
    let perLimit: [PerLimit]
    let failureAllowed: Counter
    let failureDenied: Counter
    let redis: RedisMetrics

    init(_ r: MetricsRegistry, sets: [RuleSet]) {
        let family = r.counter("outrider_ratelimit_requests_total",
                               help: "Requests checked against a limit, by domain, descriptor and result (allowed, limited, shadow_limited).",
                               labelNames: ["domain", "descriptor", "result"])
        var per: [PerLimit] = []
        for l in sets.flatMap(\.limits).sorted(by: { $0.index < $1.index }) {
            per.append(PerLimit(allowed: family.labels(l.domain, l.descriptorLabel, "allowed"),
                                limited: family.labels(l.domain, l.descriptorLabel, "limited"),
                                shadowLimited: family.labels(l.domain, l.descriptorLabel, "shadow_limited")))
        }
        perLimit = per
        let failure = r.counter("outrider_ratelimit_failure_mode_total",
                                help: "Global-limit checks decided by failure_mode because Redis was down or slow, by decision.",
                                labelNames: ["decision"])
        failureAllowed = failure.labels("allowed")
        failureDenied = failure.labels("denied")
        redis = RedisMetrics(r)
    }
}

/// The rate-limit filter's per-config-version state: rules, the shared bucket table, Redis
/// settings and counters. Immutable; shared by every worker.
final class RateLimitFactory: FilterFactory {
    let name = "ratelimit"
    let mode: FilterMode
    let settings: RateLimitSettings
    let table: LocalBucketTable
    let metrics: RateLimitMetrics

    init(mode: FilterMode, settings: RateLimitSettings, metrics: MetricsRegistry) {
        self.mode = mode
        self.settings = settings
        self.table = LocalBucketTables.shared.table(maxKeys: settings.maxKeys, metrics: metrics)
        self.metrics = RateLimitMetrics(metrics, sets: settings.ruleSets)
    }

    func makeFilter(context: StreamContext) -> (any HTTPFilter)? {
        settings.ruleSets.isEmpty ? nil : RateLimitFilter(factory: self)
    }

    /// The local bucket of one matched limit: the rule's fingerprint and the request's values.
    func localHash(_ m: MatchedLimit) -> UInt64 {
        var h = Hasher()
        h.combine(m.limit.fingerprint)
        for v in m.values { h.combine(v) }
        return UInt64(bitPattern: Int64(h.finalize()))
    }

    /// envoyproxy/ratelimit's key shape: `prefix:domain_key_value[_key_value…]_windowstart`.
    func globalKey(_ m: MatchedLimit, windowStart: UInt64) -> String {
        var key = (settings.redis?.keyPrefix ?? "outrider_rl") + ":" + m.limit.domain
        for (i, p) in m.limit.path.enumerated() {
            key += "_" + p.key + "_"
            let v = i < m.values.count ? m.values[i] : ""
            key += v.utf8.count > 200 ? "h" + fnv1a(v) : v
        }
        key += "_" + String(windowStart)
        return key
    }

    /// Stable across processes (the key must be the same on every replica).
    private func fnv1a(_ s: String) -> String {
        var h: UInt64 = 0xcbf29ce484222325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        return String(h, radix: 16)
    }
}

/// The state of one limit for one request, for the headers and the 429.
struct LimitStatus {
    var limit: RuleLimit
    var allowed: Bool
    var remaining: UInt64
    var resetNanos: UInt64
    var retryAfterNanos: UInt64
}

/// What the checks of one request decided.
struct RateLimitOutcome {
    /// The enforced limit that refused the request (the one with the longest wait).
    var refusedBy: LimitStatus?
    /// Limits that would have refused it in shadow (per descriptor or filter mode).
    var shadowRefused: [RuleLimit] = []
    /// The limit with the fewest requests left: what the headers describe.
    var tightest: LimitStatus?
    /// Redis failed and failure_mode is deny.
    var deniedByFailureMode = false
}

/// One request's rate limiting: builds the descriptors, takes a token from each local bucket,
/// asks Redis for the global ones (pausing the stream, never the loop), and answers 429 or
/// lets the request through with rate-limit headers on the response.
final class RateLimitFilter: HTTPFilter {
    private let factory: RateLimitFactory
    private var headerStatus: LimitStatus?

    init(factory: RateLimitFactory) { self.factory = factory }

    func requestHead(_ head: inout RequestHead, context: StreamContext) throws -> FilterVerdict {
        let f = factory
        let facts = RequestFacts(
            remoteAddress: RequestFacts.clientAddress(peer: context.clientAddress, headers: head.headers, useForwardedFor: f.settings.useForwardedFor),
            method: head.method, path: head.path, headers: head.headers, peerIdentity: context.peerIdentity)
        var matched: [MatchedLimit] = []
        DescriptorMatcher.match(f.settings.ruleSets, facts, into: &matched)
        if matched.isEmpty { return .proceed }

        var outcome = RateLimitOutcome()
        var globals: [MatchedLimit] = []
        let now = context.worker.loop.now
        for m in matched {
            guard let bucket = m.limit.bucket else { continue }   // unlimited
            if m.limit.scope == .global { globals.append(m); continue }
            let d = f.table.take(hash: f.localHash(m), now: now, limit: bucket, shard: context.shard)
            record(&outcome, LimitStatus(limit: m.limit, allowed: d.allowed, remaining: d.remaining,
                                         resetNanos: d.resetNanos, retryAfterNanos: d.retryAfterNanos), context)
        }
        // A local refusal settles it: no Redis round trip for a request that is refused anyway.
        if outcome.refusedBy == nil, !globals.isEmpty, let redis = f.settings.redis {
            let wallSeconds = wallClockNanos() / 1_000_000_000
            let keys = globals.map { m -> (key: String, ttl: UInt64) in
                let unit = m.limit.unit.seconds
                return (f.globalKey(m, windowStart: wallSeconds / unit * unit), unit)
            }
            let conn = RedisConnections.connection(for: redis, worker: context.worker, metrics: f.metrics.redis)
            let partial = outcome
            let submitted = conn.incr(keys, timeout: redis.timeoutNanos) { [self] (result: Result<[Int64], RedisFailure>) in
                var o = partial
                switch result {
                case .success(let counts):
                    self.recordGlobal(&o, globals, counts: counts, wallSeconds: wallClockNanos() / 1_000_000_000, context)
                case .failure:
                    self.applyFailureMode(&o, redis, context)
                }
                switch self.finish(o, context) {
                case .respond(let reply) where self.factory.mode == .enforce: context.resume(with: reply)
                default: context.resume()
                }
            }
            if submitted { return .pause }
            f.metrics.redis.errors.labels(RedisFailure.unavailable.rawValue).increment(shard: context.shard)
            applyFailureMode(&outcome, redis, context)
        }
        return finish(outcome, context)
    }

    func responseHead(_ head: inout ResponseHead, context: StreamContext) throws -> FilterVerdict {
        if let s = headerStatus { Self.addHeaders(s, style: factory.settings.headers, to: &head.headers) }
        return .proceed
    }

    // MARK: decisions

    private func record(_ o: inout RateLimitOutcome, _ s: LimitStatus, _ context: StreamContext) {
        let counters = factory.metrics.perLimit[s.limit.index]
        if s.allowed {
            counters.allowed.increment(shard: context.shard)
        } else if s.limit.shadow || factory.mode == .shadow {
            counters.shadowLimited.increment(shard: context.shard)
            o.shadowRefused.append(s.limit)
        } else {
            counters.limited.increment(shard: context.shard)
            if o.refusedBy.map({ s.retryAfterNanos > $0.retryAfterNanos }) ?? true { o.refusedBy = s }
        }
        // Shadow limits do not show in the headers: they must not change what clients see.
        if !s.limit.shadow, o.tightest.map({ s.remaining < $0.remaining }) ?? true { o.tightest = s }
    }

    /// Fixed windows: the count after this request's INCRBY against requests_per_unit.
    private func recordGlobal(_ o: inout RateLimitOutcome, _ globals: [MatchedLimit], counts: [Int64], wallSeconds: UInt64, _ context: StreamContext) {
        for (m, count) in zip(globals, counts) {
            let limit = m.limit.requestsPerUnit
            let unit = m.limit.unit.seconds
            let used = count < 0 ? 0 : UInt64(count)
            let resetSeconds = unit - wallSeconds % unit
            let reset = resetSeconds &* 1_000_000_000
            record(&o, LimitStatus(limit: m.limit, allowed: used <= limit, remaining: used >= limit ? 0 : limit - used,
                                   resetNanos: reset, retryAfterNanos: used <= limit ? 0 : reset), context)
        }
    }

    private func applyFailureMode(_ o: inout RateLimitOutcome, _ redis: RedisSettings, _ context: StreamContext) {
        if redis.failureDeny {
            factory.metrics.failureDenied.increment(shard: context.shard)
            if factory.mode == .enforce { o.deniedByFailureMode = true }
        } else {
            factory.metrics.failureAllowed.increment(shard: context.shard)
        }
    }

    private func finish(_ o: RateLimitOutcome, _ context: StreamContext) -> FilterVerdict {
        for l in o.shadowRefused {
            context.addSpanEvent("rate_limited", attributes: Self.eventAttributes(l, shadow: true))
            Diagnostics.log(.info, "ratelimit (shadow) would limit domain=\(l.domain) descriptor=\(l.descriptorLabel) request_id=\(context.requestID)")
        }
        if let refused = o.refusedBy {
            context.addSpanEvent("rate_limited", attributes: Self.eventAttributes(refused.limit, shadow: false))
            return .respond(Self.reply(refused, style: factory.settings.headers))
        }
        if o.deniedByFailureMode {
            var reply = LocalReply(status: 429, details: "rate_limited_redis_unavailable")
            reply.headers.add(name: "retry-after", value: "1")
            reply.responseFlags = "RL"
            context.addSpanEvent("rate_limited", attributes: [SpanAttribute("ratelimit.failure_mode", .string("deny"))])
            return .respond(reply)
        }
        headerStatus = factory.settings.headers == .none ? nil : o.tightest
        return .proceed
    }

    // MARK: headers

    static func eventAttributes(_ l: RuleLimit, shadow: Bool) -> [SpanAttribute] {
        [SpanAttribute("ratelimit.domain", .string(l.domain)),
         SpanAttribute("ratelimit.descriptor", .string(l.descriptorLabel)),
         SpanAttribute("ratelimit.limit", .int(Int64(clamping: l.requestsPerUnit))),
         SpanAttribute("ratelimit.unit", .string(l.unit.rawValue)),
         SpanAttribute("ratelimit.scope", .string(l.scope.rawValue)),
         SpanAttribute("ratelimit.shadow", .bool(shadow))]
    }

    static func seconds(ceil nanos: UInt64) -> UInt64 { nanos / 1_000_000_000 + (nanos % 1_000_000_000 == 0 ? 0 : 1) }

    static func reply(_ s: LimitStatus, style: HeaderStyle) -> LocalReply {
        var reply = LocalReply(status: 429, details: "rate_limited")
        reply.headers.add(name: "retry-after", value: String(max(1, seconds(ceil: s.retryAfterNanos))))
        addHeaders(s, style: style, to: &reply.headers)
        reply.responseFlags = "RL"
        return reply
    }

    /// Envoy's draft-03 `x-ratelimit-*` and/or the IETF draft's structured fields.
    static func addHeaders(_ s: LimitStatus, style: HeaderStyle, to h: inout HTTPHeaders) {
        let reset = String(seconds(ceil: s.resetNanos))
        if style == .draft03 || style == .both {
            h.set("x-ratelimit-limit", s.limit.limitHeader)
            h.set("x-ratelimit-remaining", String(s.remaining))
            h.set("x-ratelimit-reset", reset)
        }
        if style == .ietf || style == .both {
            h.set("ratelimit-policy", s.limit.policyHeader)
            h.set("ratelimit", "\(s.limit.quotedPolicyName);r=\(s.remaining);t=\(reset)")
        }
    }

    /// A Structured Fields string: printable ASCII, `"` and `\` escaped, others replaced.
    static func sfString(_ s: String) -> String {
        var out = "\""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append("\\"); out.append(Character(Unicode.Scalar(b)))
            case 0x20...0x7e: out.append(Character(Unicode.Scalar(b)))
            default: out.append("_")
            }
        }
        return out + "\""
    }
}
