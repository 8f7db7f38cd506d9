import Config
import OutriderCore
import Telemetry

/// The ordered filters of one config version (filters in mode `off` are left out).
/// Immutable and shared by every worker; `makeInstance` builds a stream's filters.
public final class FilterChain: Sendable {
    public let factories: [any FilterFactory]
    let metrics: FilterChainMetrics

    public init(factories: [any FilterFactory], metrics: MetricsRegistry) {
        self.factories = factories.filter { $0.mode != .off }
        self.metrics = FilterChainMetrics(metrics)
    }

    public static func empty(metrics: MetricsRegistry) -> FilterChain { FilterChain(factories: [], metrics: metrics) }

    public var isEmpty: Bool { factories.isEmpty }

    /// The stream's filter instances, or nil when no filter wants this stream.
    public func makeInstance(context: StreamContext) -> FilterChainInstance? {
        guard !factories.isEmpty else { return nil }
        var filters: [(any HTTPFilter, any FilterFactory)] = []
        filters.reserveCapacity(factories.count)
        for f in factories {
            if let instance = f.makeFilter(context: context) { filters.append((instance, f)) }
        }
        return filters.isEmpty ? nil : FilterChainInstance(filters: filters, context: context, metrics: metrics)
    }
}

/// Counters of the chain itself, per filter name.
final class FilterChainMetrics: Sendable {
    let localReplies: CounterFamily
    let shadowWouldRespond: CounterFamily
    let failures: CounterFamily
    init(_ r: MetricsRegistry) {
        localReplies = r.counter("outrider_filter_local_replies_total", help: "Requests answered by a filter in enforce mode, by filter and status.", labelNames: ["filter", "status"])
        shadowWouldRespond = r.counter("outrider_filter_shadow_would_respond_total", help: "Replies a filter in shadow mode would have sent, by filter and status.", labelNames: ["filter", "status"])
        failures = r.counter("outrider_filter_failures_total", help: "Filter phases that threw; the request failed with 500 (enforce) or went on (shadow).", labelNames: ["filter"])
    }
}

/// What running one phase across the chain decided.
public enum ChainDecision {
    case proceed
    /// Answer with this reply (the filter's name is in `details` for the log).
    case respond(LocalReply)
    /// A filter paused; resume from the filter after `index`.
    case paused(index: Int)
}

/// One stream's filter instances. Runs each phase in order, applies shadow mode (a shadow
/// filter's reply is counted and logged, never sent), and turns a throwing filter into a
/// 500 (enforce) or a counted no-op (shadow).
public final class FilterChainInstance {
    let filters: [(filter: any HTTPFilter, factory: any FilterFactory)]
    public let context: StreamContext
    let metrics: FilterChainMetrics

    init(filters: [(any HTTPFilter, any FilterFactory)], context: StreamContext, metrics: FilterChainMetrics) {
        self.filters = filters.map { (filter: $0.0, factory: $0.1) }
        self.context = context
        self.metrics = metrics
    }

    /// The request-head phase from filter `start` on.
    public func requestHead(_ head: inout RequestHead, from start: Int = 0) -> ChainDecision {
        var i = start
        while i < filters.count {
            let (filter, factory) = filters[i]
            let verdict: FilterVerdict
            do { verdict = try filter.requestHead(&head, context: context) }
            catch { if let d = failed(factory, error) { return d }; i += 1; continue }
            switch verdict {
            case .proceed: break
            case .pause: return .paused(index: i)
            case .respond(let reply): if let d = responded(factory, reply) { return d }
            }
            i += 1
        }
        return .proceed
    }

    public func requestBody(_ chunk: UnsafeRawBufferPointer, endStream: Bool) -> ChainDecision {
        for (filter, factory) in filters {
            let verdict: FilterVerdict
            do { verdict = try filter.requestBody(chunk, endStream: endStream, context: context) }
            catch { if let d = failed(factory, error) { return d }; continue }
            if case .respond(let reply) = verdict, let d = responded(factory, reply) { return d }
        }
        return .proceed
    }

    /// The largest body any filter of this stream needs to see before forwarding (0: none).
    public func requestBodyBufferLimit() -> Int {
        var limit = 0
        for (filter, _) in filters { limit = max(limit, filter.requestBodyBufferLimit(context: context)) }
        return limit
    }

    public func requestBodyOverLimit() -> ChainDecision {
        for (filter, factory) in filters {
            if case .respond(let reply) = filter.requestBodyOverLimit(context: context), let d = responded(factory, reply) { return d }
        }
        return .proceed
    }

    public func responseHead(_ head: inout ResponseHead) -> ChainDecision {
        for (filter, factory) in filters {
            let verdict: FilterVerdict
            do { verdict = try filter.responseHead(&head, context: context) }
            catch { if let d = failed(factory, error) { return d }; continue }
            if case .respond(let reply) = verdict, let d = responded(factory, reply) { return d }
        }
        return .proceed
    }

    public func responseBody(_ chunk: UnsafeRawBufferPointer, endStream: Bool) {
        for (filter, _) in filters { filter.responseBody(chunk, endStream: endStream, context: context) }
    }

    public func streamComplete(_ outcome: StreamOutcome) {
        for (filter, _) in filters { filter.streamComplete(outcome, context: context) }
    }

    // MARK: shadow and failure handling

    private func responded(_ factory: any FilterFactory, _ reply: LocalReply) -> ChainDecision? {
        let status = String(reply.status)
        if factory.mode == .shadow {
            metrics.shadowWouldRespond.labels(factory.name, status).increment(shard: context.shard)
            Diagnostics.log(.info, "filter \(factory.name) (shadow) would answer \(reply.status) (\(reply.details)) request_id=\(context.requestID)")
            return nil
        }
        metrics.localReplies.labels(factory.name, status).increment(shard: context.shard)
        return .respond(reply)
    }

    private func failed(_ factory: any FilterFactory, _ error: any Error) -> ChainDecision? {
        metrics.failures.labels(factory.name).increment(shard: context.shard)
        Diagnostics.log(.error, "filter \(factory.name) failed: \(error) request_id=\(context.requestID)")
        if factory.mode == .shadow { return nil }
        let e = OutriderError(.filterFailed, source: .internal, "filter \(factory.name) failed")
        var reply = e.localReply
        reply.details = "filter_failed_\(factory.name)"
        return .respond(reply)
    }
}
