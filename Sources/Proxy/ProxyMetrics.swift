import Telemetry

/// Every metric family of the data path, declared once (Envoy's ALL_*_STATS).
public final class ProxyMetrics: Sendable {
    public let registry: MetricsRegistry
    let connectionsTotal: CounterFamily
    let connectionsActive: GaugeFamily
    let requestsTotal: CounterFamily
    let requestDuration: HistogramFamily
    let bytesReceived: CounterFamily
    let bytesSent: CounterFamily
    let localReplies: CounterFamily
    let upstreamConnections: CounterFamily
    let upstreamRequests: CounterFamily
    let upstreamErrors: CounterFamily
    let tlsHandshakes: CounterFamily

    public init(registry: MetricsRegistry) {
        self.registry = registry
        connectionsTotal = registry.counter("outrider_downstream_connections_total", help: "Downstream connections accepted.", labelNames: ["listener"])
        connectionsActive = registry.gauge("outrider_downstream_connections_active", help: "Downstream connections open now.", labelNames: ["listener"])
        requestsTotal = registry.counter("outrider_downstream_requests_total", help: "Downstream requests completed, by response code class.", labelNames: ["listener", "code_class"])
        requestDuration = registry.histogram("outrider_downstream_request_duration_seconds", help: "Time from the first byte of the request head to the last byte of the response.", labelNames: ["listener"],
                                             buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30])
        bytesReceived = registry.counter("outrider_downstream_bytes_received_total", help: "Bytes read from downstream connections.", labelNames: ["listener"])
        bytesSent = registry.counter("outrider_downstream_bytes_sent_total", help: "Bytes written to downstream connections.", labelNames: ["listener"])
        localReplies = registry.counter("outrider_local_replies_total", help: "Responses produced by Outrider itself, by reason.", labelNames: ["listener", "details"])
        upstreamConnections = registry.counter("outrider_upstream_connections_total", help: "Upstream TCP connections opened (keep-alive reuse keeps this low).", labelNames: ["listener"])
        upstreamRequests = registry.counter("outrider_upstream_requests_total", help: "Requests sent upstream.", labelNames: ["listener"])
        upstreamErrors = registry.counter("outrider_upstream_errors_total", help: "Upstream failures, by reason.", labelNames: ["listener", "reason"])
        tlsHandshakes = registry.counter("outrider_tls_handshakes_total", help: "TLS handshakes on downstream connections, by result and failure reason (unknown_ca, expired, no_client_cert, …).", labelNames: ["listener", "result", "reason"])
    }

    func listenerStats(_ name: String) -> ListenerStats { ListenerStats(name: name, metrics: self) }
}

/// Handles for one listener's series, resolved once per config snapshot so the request path
/// never looks up a label set.
final class ListenerStats: Sendable {
    let name: String
    let metrics: ProxyMetrics
    let connectionsTotal: Counter
    let connectionsActive: Gauge
    /// Indexed by status / 100 (0 for anything out of range).
    let requestsByClass: [Counter]
    let duration: Histogram
    let bytesReceived: Counter
    let bytesSent: Counter
    let upstreamConnections: Counter
    let upstreamRequests: Counter

    init(name: String, metrics: ProxyMetrics) {
        self.name = name
        self.metrics = metrics
        connectionsTotal = metrics.connectionsTotal.labels(name)
        connectionsActive = metrics.connectionsActive.labels(name)
        requestsByClass = (0...5).map { metrics.requestsTotal.labels(name, $0 == 0 ? "other" : "\($0)xx") }
        duration = metrics.requestDuration.labels(name)
        bytesReceived = metrics.bytesReceived.labels(name)
        bytesSent = metrics.bytesSent.labels(name)
        upstreamConnections = metrics.upstreamConnections.labels(name)
        upstreamRequests = metrics.upstreamRequests.labels(name)
    }

    func request(status: Int, shard: Int) {
        let c = status / 100
        requestsByClass[(c >= 1 && c <= 5) ? c : 0].increment(shard: shard)
    }
    // Rare paths: the family lookup takes a lock, which is fine off the fast path.
    func localReply(_ details: String, shard: Int) {
        metrics.localReplies.labels(name, details).increment(shard: shard)
    }
    func tlsHandshake(ok: Bool, reason: String, shard: Int) {
        metrics.tlsHandshakes.labels(name, ok ? "ok" : "failed", reason).increment(shard: shard)
    }
    func upstreamError(_ reason: String, shard: Int) {
        metrics.upstreamErrors.labels(name, reason).increment(shard: shard)
    }
}
