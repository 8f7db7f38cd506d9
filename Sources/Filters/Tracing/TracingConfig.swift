import Config
import Dispatch
import OutriderCore
import Synchronization
import Telemetry

/// The tracing filter's settings, parsed from its `outrider.yaml` entry:
/// ```yaml
/// - name: tracing
///   mode: enforce
///   sampling: 1.0            # ratio for new traces; parent-based otherwise
///   service_name: outrider   # OTEL_SERVICE_NAME wins
///   exporter:
///     endpoint: http://127.0.0.1:4318      # /v1/traces appended unless a path is given
///     protocol: http/protobuf               # or http/json
///     headers: {x-tenant: a}
///     timeout: 10s
///     max_queue_size: 2048
///     max_export_batch_size: 512
///     schedule_delay: 5s
/// ```
/// OTEL_* environment variables override the file, as users of OpenTelemetry SDKs expect.
struct TracingSettings: Sendable, Equatable {
    var sampler: Sampler
    var exporter: OTLPExporterConfig
    /// OTEL_SDK_DISABLED=true: the filter does nothing.
    var disabled: Bool
}

enum TracingFilterBuilder: FilterBuilder {
    static let name = "tracing"
    static let knownKeys: Set<String> = ["name", "mode", "sampling", "service_name", "exporter"]
    static let exporterKeys: Set<String> = ["endpoint", "protocol", "headers", "timeout", "max_queue_size", "max_export_batch_size", "schedule_delay", "max_retry_elapsed"]

    static func validate(_ entry: FilterEntry, environment: [String: String]) -> [ConfigDiagnostic] {
        switch parse(entry, environment: environment, version: "") {
        case .success: return []
        case .failure(let e): return e.diagnostics
        }
    }

    static func build(_ entry: FilterEntry, context: FilterBuildContext) throws(ConfigErrors) -> any FilterFactory {
        let settings: TracingSettings
        switch parse(entry, environment: context.environment, version: context.version) {
        case .success(let s): settings = s
        case .failure(let e): throw e
        }
        let exporter = settings.disabled ? nil : ExporterCache.shared.exporter(for: settings.exporter, metrics: context.metrics)
        return TracingFactory(mode: entry.mode, settings: settings, sink: exporter, metrics: TracingMetrics(context.metrics))
    }

    static func parse(_ entry: FilterEntry, environment env: [String: String], version: String) -> Result<TracingSettings, ConfigErrors> {
        var errors: [ConfigDiagnostic] = []
        let node = entry.settings
        func error(_ n: ConfigNode?, _ message: String) {
            errors.append(ConfigDiagnostic(file: entry.file, line: n?.line ?? entry.line, column: n?.column ?? 0, message: "filter 'tracing': \(message)"))
        }
        for (key, value) in node.mapEntries ?? [] where !knownKeys.contains(key) {
            error(value, "unknown key '\(key)' (known: \(knownKeys.sorted().joined(separator: ", ")))")
        }

        var ratio = 1.0
        if let s = node["sampling"] {
            if let d = s.doubleValue, d >= 0, d <= 1 { ratio = d } else { error(s, "sampling must be a number between 0 and 1") }
        }
        var sampler = Sampler.parentBasedTraceIDRatio(ratio)
        switch Sampler.fromEnvironment(sampler: env["OTEL_TRACES_SAMPLER"], argument: env["OTEL_TRACES_SAMPLER_ARG"]) {
        case .success(let s?): sampler = s
        case .success(nil): break
        case .failure(let e): errors.append(ConfigDiagnostic(file: "env", line: 0, message: "OTEL_TRACES_SAMPLER: \(e.message)"))
        }

        var serviceEnv = env
        if serviceEnv["OTEL_SERVICE_NAME"] == nil, let s = node["service_name"] {
            if let name = s.stringValue, !name.isEmpty { serviceEnv["OTEL_SERVICE_NAME"] = name } else { error(s, "service_name must be a non-empty string") }
        }
        let resource = TelemetryResource.fromEnvironment(serviceEnv, defaultServiceName: "outrider", version: version)
        var exporter = OTLPExporterConfig(resource: resource, scope: InstrumentationScopeInfo(name: "outrider", version: version))

        if let e = node["exporter"] {
            if e.mapEntries == nil { error(e, "exporter must be a map") }
            for (key, value) in e.mapEntries ?? [] where !exporterKeys.contains(key) {
                error(value, "unknown key '\(key)' in exporter (known: \(exporterKeys.sorted().joined(separator: ", ")))")
            }
            if let ep = e["endpoint"] {
                if let s = ep.stringValue { exporter.endpoint = OTLPExporterConfig.tracesURL(fromBase: s) } else { error(ep, "endpoint must be a URL string") }
            }
            if let p = e["protocol"] {
                switch p.stringValue {
                case "http/protobuf": exporter.encoding = .protobuf
                case "http/json": exporter.encoding = .json
                default: error(p, "protocol must be http/protobuf or http/json")
                }
            }
            if let h = e["headers"] {
                if let entries = h.mapEntries {
                    exporter.headers = entries.compactMap { k, v in v.stringValue.map { (k, $0) } }
                } else { error(h, "headers must be a map of strings") }
            }
            func duration(_ key: String, _ set: (UInt64) -> Void) {
                guard let n = e[key] else { return }
                if let s = n.stringValue, let d = ConfigDuration.parse(s), d > 0 { set(d) }
                else if let d = n.doubleValue, d > 0, let v = ConfigDuration.fromSeconds(d) { set(v) }
                else { error(n, "\(key) must be a positive duration like 5s or 200ms") }
            }
            func count(_ key: String, _ range: ClosedRange<Int>, _ set: (Int) -> Void) {
                guard let n = e[key] else { return }
                if let v = n.intValue, range.contains(v) { set(v) } else { error(n, "\(key) must be an integer in \(range.lowerBound)...\(range.upperBound)") }
            }
            duration("timeout") { exporter.timeoutNanos = $0 }
            duration("schedule_delay") { exporter.scheduleDelayNanos = $0 }
            duration("max_retry_elapsed") { exporter.maxRetryElapsedNanos = $0 }
            count("max_queue_size", 1...1_000_000) { exporter.maxQueueSize = $0 }
            count("max_export_batch_size", 1...100_000) { exporter.maxExportBatchSize = $0 }
        }

        let (withEnv, envErrors, envWarnings) = OTLPExporterConfig.applyingEnvironment(exporter, env)
        exporter = withEnv
        for m in envErrors { errors.append(ConfigDiagnostic(file: "env", line: 0, message: m)) }
        for w in envWarnings { Diagnostics.log(.warn, "tracing: \(w)") }
        for m in exporter.validate() { error(node["exporter"], m) }
        if exporter.maxExportBatchSize > exporter.maxQueueSize {
            error(node["exporter"], "max_export_batch_size (\(exporter.maxExportBatchSize)) must not exceed max_queue_size (\(exporter.maxQueueSize))")
        }
        let disabled = (env["OTEL_SDK_DISABLED"] ?? "").lowercased() == "true"
        if !errors.isEmpty { return .failure(ConfigErrors(errors)) }
        return .success(TracingSettings(sampler: sampler, exporter: exporter, disabled: disabled))
    }
}

/// One exporter per distinct exporter config for the whole process: a reload that keeps the
/// same exporter settings keeps the same queue and connection; a changed one starts a new
/// exporter and retires the old after in-flight requests had time to hand over their spans.
final class ExporterCache: Sendable {
    static let shared = ExporterCache()
    private let current = Mutex<(config: OTLPExporterConfig, exporter: BatchSpanExporter)?>(nil)

    func exporter(for config: OTLPExporterConfig, metrics: MetricsRegistry) -> BatchSpanExporter {
        let (exporter, retired) = current.withLock { cur -> (BatchSpanExporter, BatchSpanExporter?) in
            if let c = cur, c.config == config { return (c.exporter, nil) }
            let e = BatchSpanExporter(config: config, metrics: metrics)
            e.start()
            let old = cur?.exporter
            cur = (config, e)
            return (e, old)
        }
        if let old = retired {
            // Requests still running on the previous snapshot may send to it for a while.
            DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(10)) {
                old.shutdown(flushWithin: 2_000_000_000)
            }
        }
        return exporter
    }

    /// Drain: flush the active exporter within `nanos`.
    func shutdownAll(within nanos: UInt64) {
        let e = current.withLock { $0?.exporter }
        e?.shutdown(flushWithin: nanos)
    }
}

/// Public entry for the process's drain path.
public enum TracingExport {
    public static func flushAndStop(within nanos: UInt64) { ExporterCache.shared.shutdownAll(within: nanos) }
}
