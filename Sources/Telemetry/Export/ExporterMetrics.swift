/// The exporter's metric families (names fixed; SLIS.md "telemetry delivery success", "data
/// loss rate" by reason, "telemetry latency", "buffer usage", "schema errors").
///
/// Accounting invariant, exact once the exporter is idle:
///   received = exported + Σ dropped{reason} + queue_depth
/// (`queue_depth` includes the batch being exported). Every drop series is created up front so
/// ratios have a 0 to divide rather than a missing series.
struct ExporterMetrics: Sendable {
    let received: Counter
    let exported: Counter
    let droppedQueueFull: Counter
    let droppedRejected: Counter
    let droppedRetriesExhausted: Counter
    let droppedShutdown: Counter
    let batchesOK: Counter
    let batchesRejected: Counter
    let batchesFailed: Counter
    let batchesRetried: Counter
    let exportDuration: Histogram
    let spanLatency: Histogram

    static let exportDurationBuckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
    static let spanLatencyBuckets: [Double] = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300]

    init(registry r: MetricsRegistry) {
        received = r.counter("outrider_exporter_spans_received_total",
                             help: "Spans handed to the OTLP exporter (trySend calls).").labels([])
        exported = r.counter("outrider_exporter_spans_exported_total",
                             help: "Spans accepted by the collector.").labels([])
        let dropped = r.counter("outrider_exporter_spans_dropped_total",
                                help: "Spans the exporter dropped, by reason: queue_full, rejected (collector refused: 4xx or partial success), retries_exhausted, shutdown.",
                                labelNames: ["reason"])
        droppedQueueFull = dropped.labels("queue_full")
        droppedRejected = dropped.labels("rejected")
        droppedRetriesExhausted = dropped.labels("retries_exhausted")
        droppedShutdown = dropped.labels("shutdown")
        let batches = r.counter("outrider_exporter_batches_total",
                                help: "Export batches by final result: ok (2xx), rejected (not retryable status), failed (retries exhausted or shutdown).",
                                labelNames: ["result"])
        batchesOK = batches.labels("ok")
        batchesRejected = batches.labels("rejected")
        batchesFailed = batches.labels("failed")
        batchesRetried = r.counter("outrider_exporter_batches_retried_total",
                                   help: "Export attempts that were retried (429/502/503/504, connection errors, timeouts).").labels([])
        exportDuration = r.histogram("outrider_exporter_export_duration_seconds",
                                     help: "Duration of each OTLP/HTTP export attempt.",
                                     buckets: Self.exportDurationBuckets).labels([])
        spanLatency = r.histogram("outrider_exporter_span_latency_seconds",
                                  help: "Time from span end to acceptance by the collector.",
                                  buckets: Self.spanLatencyBuckets).labels([])
    }
}
