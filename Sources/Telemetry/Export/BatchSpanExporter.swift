#if canImport(Glibc)
import Glibc
#endif
import OutriderCore
import Synchronization

/// The batch span processor and OTLP/HTTP exporter in one: a bounded queue fed by the proxy's
/// loops and one dedicated exporter thread (never a proxy loop) that sends batches with
/// blocking sockets, retries what the spec says is retryable, and counts every span it drops.
///
/// Life cycle: `init` → `start()` → `trySend` from any thread → `shutdown(flushWithin:)`.
/// Memory is bounded by `maxQueueSize` spans plus one batch in flight, whatever the collector
/// does: while a batch waits to be retried new spans keep queueing up to the bound and the
/// overflow is dropped (`reason="queue_full"`).
public final class BatchSpanExporter: SpanSink, Sendable {
    private let core: ExporterCore
    private let thread = Mutex<ThreadState>(.idle)

    private enum ThreadState: Sendable { case idle, running(pthread_t), stopped }

    public convenience init(config: OTLPExporterConfig, metrics: MetricsRegistry) {
        self.init(config: config, metrics: metrics, retry: .default)
    }

    /// Tests inject a short backoff.
    init(config: OTLPExporterConfig, metrics: MetricsRegistry, retry: ExportRetryPolicy) {
        core = ExporterCore(config: config, registry: metrics, retry: retry)
    }

    /// Starts the exporter thread (once; later calls do nothing).
    public func start() {
        thread.withLock { st in
            guard case .idle = st else { return }
            let worker = Unmanaged.passRetained(ExportWorker(core: core)).toOpaque()
            var tid = pthread_t()
            let rc = pthread_create(&tid, nil, { raw in
                guard let raw else { return nil }
                let w = Unmanaged<ExportWorker>.fromOpaque(raw).takeRetainedValue()
                w.run()
                return nil
            }, worker)
            if rc == 0 {
                st = .running(tid)
            } else {
                Unmanaged<ExportWorker>.fromOpaque(worker).release()
                st = .stopped  // spans queue up and are dropped at shutdown; nothing traps
            }
        }
    }

    /// O(1), never blocks on I/O: a short lock to store the span (see `SpanQueue`).
    public func trySend(_ span: FinishedSpan) -> Bool {
        let m = core.metrics
        m.received.increment(shard: MetricsShard.shared)
        switch core.queue.push(span) {
        case .queued: return true
        case .full:
            m.droppedQueueFull.increment(shard: MetricsShard.shared)
            return false
        case .closed:
            m.droppedShutdown.increment(shard: MetricsShard.shared)
            return false
        }
    }

    /// Stops accepting spans, exports what is queued (best effort until `nanos` from now;
    /// no new attempt starts after that), then stops the thread. Spans still queued are
    /// dropped (`reason="shutdown"`). Returns after the thread exited, or shortly after the
    /// deadline if an export request is still running (that request finishes in the
    /// background within its own timeout and is accounted for).
    public func shutdown(flushWithin nanos: UInt64) {
        let now = monotonicNanos()
        let deadline = now &+ nanos < now ? UInt64.max : now &+ nanos
        core.queue.beginShutdown(flushDeadline: deadline)
        let previous: ThreadState = thread.withLock { st in
            let p = st
            st = .stopped
            return p
        }
        switch previous {
        case .running(let tid):
            join(tid, graceUntil: deadline)
        case .idle, .stopped:
            let n = core.queue.drainAll()
            if n > 0 { core.metrics.droppedShutdown.add(UInt64(n), shard: MetricsShard.shared) }
        }
    }

    /// Joins the thread, waiting at most until `graceUntil` + 1 s; otherwise detaches it.
    private func join(_ tid: pthread_t, graceUntil: UInt64) {
        let now = monotonicNanos()
        let wait = graceUntil > now ? min(graceUntil - now, 3_600_000_000_000) : 0
        // glibc's pthread_timedjoin_np is not visible through the Glibc module, so the
        // worker announces its exit on the queue's condition variable instead.
        if core.queue.waitWorkerFinished(until: monotonicNanos() &+ wait &+ 1_000_000_000) {
            pthread_join(tid, nil)
        } else {
            pthread_detach(tid)
        }
    }

    /// Spans queued plus the batch being exported.
    public var queueDepth: Int { core.queue.depth }

    public var queueCapacity: Int { core.queue.capacity }
}

/// What the exporter object and its thread share.
final class ExporterCore: Sendable {
    let config: OTLPExporterConfig
    let queue: SpanQueue
    let metrics: ExporterMetrics
    let retry: ExportRetryPolicy
    /// Wall-clock nanoseconds of the last 2xx, 0 before the first.
    let lastSuccessWallNanos = Atomic<UInt64>(0)

    init(config: OTLPExporterConfig, registry: MetricsRegistry, retry: ExportRetryPolicy) {
        self.config = config
        self.retry = retry
        queue = SpanQueue(capacity: config.maxQueueSize, batchSize: config.maxExportBatchSize)
        metrics = ExporterMetrics(registry: registry)
        // Scrape-time gauges. Registering again (an exporter built after a reload) replaces
        // the reader, so the family is not duplicated; a weak reference keeps the registry
        // from holding a stopped exporter's queue alive.
        registry.gaugeFunction("outrider_exporter_queue_depth",
                               help: "Spans waiting to be exported, including the batch in flight.") { [weak self] in
            Double(self?.queue.depth ?? 0)
        }
        registry.gaugeFunction("outrider_exporter_queue_capacity",
                               help: "Maximum spans the exporter queue holds (max_queue_size).") { [weak self] in
            Double(self?.queue.capacity ?? 0)
        }
        registry.gaugeFunction("outrider_exporter_last_success_timestamp_seconds",
                               help: "Unix time of the last export the collector accepted (0: none yet).") { [weak self] in
            Double(self?.lastSuccessWallNanos.load(ordering: .relaxed) ?? 0) / 1e9
        }
    }
}

/// State only the exporter thread touches.
final class ExportWorker {
    let core: ExporterCore
    private var client: OTLPHTTPClient?
    private let endpointError: String?

    init(core: ExporterCore) {
        self.core = core
        switch OTLPEndpoint.parse(core.config.endpoint) {
        case .success(let ep): client = OTLPHTTPClient(endpoint: ep); endpointError = nil
        case .failure(let e): client = nil; endpointError = e.message
        }
    }

    func run() {
        let delay = core.config.scheduleDelayNanos
        var nextDeadline = monotonicNanos() &+ delay
        while true {
            let (batch, stopping, flushDeadline) = core.queue.takeBatch(waitUntil: nextDeadline)
            if batch.isEmpty {
                if stopping { break }
                nextDeadline = monotonicNanos() &+ delay
                continue
            }
            if stopping && monotonicNanos() >= flushDeadline {
                drop(batch.count, core.metrics.droppedShutdown)
                core.metrics.batchesFailed.increment(shard: MetricsShard.shared)
                core.queue.finishInFlight()
                break
            }
            export(batch)
            core.queue.finishInFlight()
            // A full batch waiting is taken at once by the next `takeBatch`; otherwise wait
            // for the schedule delay from now.
            nextDeadline = monotonicNanos() &+ delay
        }
        let left = core.queue.drainAll()
        if left > 0 { drop(left, core.metrics.droppedShutdown) }
        client?.close()
        core.queue.markWorkerFinished()
    }

    private func drop(_ n: Int, _ counter: Counter) {
        if n > 0 { counter.add(UInt64(n), shard: MetricsShard.shared) }
    }

    /// Exports one batch until it is accepted, rejected, out of retry budget or out of
    /// shutdown time. Every span of the batch ends up in exactly one counter.
    private func export(_ batch: [FinishedSpan]) {
        let m = core.metrics
        let cfg = core.config
        guard let client else {
            // Unusable endpoint (validation should have caught it): nothing can deliver this.
            drop(batch.count, m.droppedRejected)
            m.batchesRejected.increment(shard: MetricsShard.shared)
            return
        }
        let body: [UInt8] = cfg.encoding == .json
            ? OTLPTraceEncoding.json(resource: cfg.resource, scope: cfg.scope, spans: batch)
            : OTLPTraceEncoding.protobuf(resource: cfg.resource, scope: cfg.scope, spans: batch)
        let firstAttempt = monotonicNanos()
        var attempt = 0
        while true {
            let now = monotonicNanos()
            let (stopping, flushDeadline) = core.queue.shutdownState
            var deadline = now &+ cfg.timeoutNanos
            if stopping {
                if now >= flushDeadline {
                    drop(batch.count, m.droppedShutdown)
                    m.batchesFailed.increment(shard: MetricsShard.shared)
                    return
                }
                deadline = min(deadline, flushDeadline)
            }
            let result = client.post(body: body, contentType: cfg.encoding.contentType,
                                     headers: cfg.headers, deadline: deadline)
            let done = monotonicNanos()
            m.exportDuration.observe(Double(done &- now) / 1e9, shard: MetricsShard.shared)
            switch classifyExport(result, encoding: cfg.encoding, nowWallNanos: wallClockNanos()) {
            case .accepted(let rejected, _):
                let r = Int(min(rejected, Int64(batch.count)))
                drop(r, m.droppedRejected)
                if batch.count - r > 0 { m.exported.add(UInt64(batch.count - r), shard: MetricsShard.shared) }
                m.batchesOK.increment(shard: MetricsShard.shared)
                let wall = wallClockNanos()
                core.lastSuccessWallNanos.store(wall, ordering: .relaxed)
                for s in batch {
                    let lat = wall > s.endUnixNano ? Double(wall - s.endUnixNano) / 1e9 : 0
                    m.spanLatency.observe(lat, shard: MetricsShard.shared)
                }
                return
            case .rejected:
                drop(batch.count, m.droppedRejected)
                m.batchesRejected.increment(shard: MetricsShard.shared)
                return
            case .retryable(let retryAfter, _):
                attempt += 1
                let wait = retryAfter ?? core.retry.delay(attempt: attempt, unit: Double.random(in: 0..<1))
                let elapsed = done &- firstAttempt
                let (resumeAt, overflow) = done.addingReportingOverflow(wait)
                if overflow || elapsed &+ min(wait, UInt64.max / 2) > cfg.maxRetryElapsedNanos {
                    drop(batch.count, m.droppedRetriesExhausted)
                    m.batchesFailed.increment(shard: MetricsShard.shared)
                    return
                }
                let st = core.queue.shutdownState
                if st.stopping && resumeAt > st.flushDeadline {
                    drop(batch.count, m.droppedShutdown)
                    m.batchesFailed.increment(shard: MetricsShard.shared)
                    return
                }
                m.batchesRetried.increment(shard: MetricsShard.shared)
                // Shutdown interrupts a backoff once (to flush); after that, waits are plain.
                _ = core.queue.sleep(until: resumeAt, wakeOnStop: !st.stopping)
            }
        }
    }
}
