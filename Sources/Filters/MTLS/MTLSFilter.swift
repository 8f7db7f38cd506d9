import Config
import OutriderCore
import Telemetry

/// Counters of the mtls filter (prefix `outrider_mtls_`), resolved once per rule so the
/// request path never takes the registry's lock.
///
/// Every request the filter sees is counted exactly once in `outrider_mtls_decisions_total`,
/// so the denial rate an operator alerts on is
/// `sum(rate(outrider_mtls_decisions_total{result="denied"}[5m])) / sum(rate(outrider_mtls_decisions_total[5m]))`.
final class MTLSMetrics: Sendable {
    /// One rule's counters: the result it can produce (ALLOW rules allow, DENY rules deny, or
    /// `shadow_denied` while the filter is in shadow mode). Created at load, so they start at 0.
    struct PerRule: Sendable {
        let allowed: Counter?
        let denied: Counter?
    }
    let perRule: [PerRule]
    /// `rule="default"`: no ALLOW rule in the policy (allowed), or none matched (denied).
    let defaultRule: PerRule
    let unauthenticated: Counter

    init(_ r: MetricsRegistry, policy: MTLSPolicy, shadow: Bool) {
        let family = r.counter("outrider_mtls_decisions_total",
                               help: "Requests decided by the mtls policy, by rule (\"default\" when no rule decided), action and result (allowed, denied, shadow_denied).",
                               labelNames: ["rule", "action", "result"])
        let deniedResult = shadow ? "shadow_denied" : "denied"
        func counters(_ rule: String, _ action: MTLSAction) -> PerRule {
            action == .allow
                ? PerRule(allowed: family.labels(rule, action.rawValue, "allowed"), denied: nil)
                : PerRule(allowed: nil, denied: family.labels(rule, action.rawValue, deniedResult))
        }
        perRule = policy.rules.map { counters($0.name, $0.action) }
        defaultRule = counters("default", policy.allowRules.isEmpty ? .allow : .deny)
        unauthenticated = r.counter("outrider_mtls_unauthenticated_requests_total",
                                    help: "Requests seen by the mtls filter without a verified client identity (no client certificate, or plaintext).").labels()
        let rules = r.gauge("outrider_mtls_policy_rules", help: "Rules of the active mtls policy, by action.", labelNames: ["action"])
        rules.labels("ALLOW").set(Int64(policy.allowRules.count))
        rules.labels("DENY").set(Int64(policy.denyRules.count))
    }
}

/// The mtls filter's per-config-version state: the policy and its counters. Immutable; shared
/// by every worker.
final class MTLSFactory: FilterFactory {
    let name = "mtls"
    let mode: FilterMode
    let settings: MTLSSettings
    let metrics: MTLSMetrics

    init(mode: FilterMode, settings: MTLSSettings, metrics: MetricsRegistry) {
        self.mode = mode
        self.settings = settings
        self.metrics = MTLSMetrics(metrics, policy: settings.policy, shadow: mode == .shadow)
    }

    func makeFilter(context: StreamContext) -> (any HTTPFilter)? { MTLSFilter(factory: self) }
}

/// One request's authorization: the verified peer identity (from the TLS handshake), the
/// method and the normalized path against the policy. A refusal is a 403 with the deciding
/// rule in the body, `response_code_details: mtls_denied`, flags `UAEX`, and an `mtls.denied`
/// span event. In shadow mode the chain counts and logs the 403 and lets the request go on.
final class MTLSFilter: HTTPFilter {
    private let factory: MTLSFactory

    init(factory: MTLSFactory) { self.factory = factory }

    func requestHead(_ head: inout RequestHead, context: StreamContext) throws -> FilterVerdict {
        let f = factory
        let identity = (context.peerIdentity?.isEmpty ?? true) ? nil : context.peerIdentity
        if identity == nil { f.metrics.unauthenticated.increment(shard: context.shard) }
        let decision = f.settings.policy.evaluate(identity: identity, method: head.method, target: head.target)
        let shadow = f.mode == .shadow
        let counters: MTLSMetrics.PerRule
        let rule: MTLSRule?
        switch decision {
        case .allowedBy(let i):
            f.metrics.perRule[i].allowed?.increment(shard: context.shard)
            return .proceed
        case .allowedByDefault:
            f.metrics.defaultRule.allowed?.increment(shard: context.shard)
            return .proceed
        case .deniedBy(let i):
            counters = f.metrics.perRule[i]; rule = f.settings.policy.rules[i]
        case .deniedByDefault:
            counters = f.metrics.defaultRule; rule = nil
        }
        counters.denied?.increment(shard: context.shard)
        let reason = rule.map { "denied by rule '\($0.name)'" } ?? "no allow rule matched"
        context.addSpanEvent("mtls.denied", attributes: [
            SpanAttribute("mtls.rule", .string(rule?.name ?? "default")),
            SpanAttribute("mtls.reason", .string(reason)),
            SpanAttribute("mtls.principal", .string(identity ?? "unauthenticated")),
            SpanAttribute("mtls.shadow", .bool(shadow)),
        ])
        if shadow {
            Diagnostics.log(.info, "mtls (shadow) would deny: \(reason) principal=\(identity ?? "unauthenticated") method=\(head.method) request_id=\(context.requestID)")
        }
        return .respond(Self.reply(reason))
    }

    static func reply(_ reason: String) -> LocalReply {
        var reply = LocalReply(status: 403, details: "mtls_denied", body: "RBAC: access denied: \(reason)\n")
        reply.responseFlags = "UAEX"
        return reply
    }
}
