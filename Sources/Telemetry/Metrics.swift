import Synchronization

/// All of a process's metrics, rendered for `/metrics` in Prometheus text format 0.0.4.
///
/// Registration and label look-ups take a lock (start-up, first use); increments never do —
/// see `ShardedCells`. Registering a name again with the same type returns the existing family,
/// so reload code may call the same registration twice. A name registered with a different type,
/// or with different label names, is a programming error: the first registration wins, the
/// caller gets a family that works but is not exported (or the existing one, when the type
/// matches), the name is recorded in `conflicts`, and nothing traps.
public final class MetricsRegistry: Sendable {
    enum Family: Sendable {
        case counter(CounterFamily)
        case gauge(GaugeFamily)
        case histogram(HistogramFamily)
        case function(FunctionFamily)
    }

    private struct State: Sendable {
        var order: [Family] = []
        var byName: [String: Family] = [:]
        var conflicts: [String] = []
    }

    private let state = Mutex<State>(State())

    public init() {}

    /// Names whose registrations disagreed (type or label names). Start-up code may log these;
    /// tests assert it is empty.
    public var conflicts: [String] { state.withLock { $0.conflicts } }

    public func counter(_ name: String, help: String, labelNames: [String] = []) -> CounterFamily {
        let name = sanitizeName(name, colons: true)
        let labelNames = labelNames.map { sanitizeName($0, colons: false) }
        return state.withLock { st in
            switch st.byName[name] {
            case .counter(let f)?:
                if f.labelNames != labelNames { st.conflicts.append(name) }
                return f
            case nil:
                let f = CounterFamily(name: name, help: help, labelNames: labelNames)
                st.byName[name] = .counter(f)
                st.order.append(.counter(f))
                return f
            case _?:
                st.conflicts.append(name)
                return CounterFamily(name: name, help: help, labelNames: labelNames)
            }
        }
    }

    public func gauge(_ name: String, help: String, labelNames: [String] = []) -> GaugeFamily {
        let name = sanitizeName(name, colons: true)
        let labelNames = labelNames.map { sanitizeName($0, colons: false) }
        return state.withLock { st in
            switch st.byName[name] {
            case .gauge(let f)?:
                if f.labelNames != labelNames { st.conflicts.append(name) }
                return f
            case nil:
                let f = GaugeFamily(name: name, help: help, labelNames: labelNames)
                st.byName[name] = .gauge(f)
                st.order.append(.gauge(f))
                return f
            case _?:
                st.conflicts.append(name)
                return GaugeFamily(name: name, help: help, labelNames: labelNames)
            }
        }
    }

    /// `buckets` are upper bounds (any order; non-finite values and duplicates are dropped,
    /// +Inf is implicit). `sumScale` is the fixed-point resolution of `_sum` in units per 1.0:
    /// the default 1e6 suits seconds; pass 1 for byte sizes (see `Histogram`).
    public func histogram(_ name: String, help: String, labelNames: [String] = [], buckets: [Double],
                          sumScale: Double = 1_000_000) -> HistogramFamily {
        let name = sanitizeName(name, colons: true)
        let labelNames = labelNames.map { sanitizeName($0, colons: false) }
        // A zero, negative or non-finite scale would make every sum 0 or NaN.
        let scale = sumScale.isFinite && sumScale > 0 ? sumScale : 1_000_000
        return state.withLock { st in
            switch st.byName[name] {
            case .histogram(let f)?:
                let wanted = Array(Set(buckets.filter { $0.isFinite })).sorted()
                if f.labelNames != labelNames || f.buckets != wanted { st.conflicts.append(name) }
                return f
            case nil:
                let f = HistogramFamily(name: name, help: help, labelNames: labelNames,
                                        buckets: buckets, sumScale: scale)
                st.byName[name] = .histogram(f)
                st.order.append(.histogram(f))
                return f
            case _?:
                st.conflicts.append(name)
                return HistogramFamily(name: name, help: help, labelNames: labelNames,
                                       buckets: buckets, sumScale: scale)
            }
        }
    }

    /// A gauge computed at scrape time (queue depth, config version, RSS…). Labels fixed.
    /// `read` runs on the scraping thread, outside the registry lock; it must be cheap and must
    /// not call back into this registry's `render()`.
    public func gaugeFunction(_ name: String, help: String, labels: [String: String] = [:],
                              _ read: @escaping @Sendable () -> Double) {
        function(name, help: help, kind: .gauge, labels: labels, read)
    }

    /// A counter computed at scrape time (process CPU seconds, totals kept elsewhere).
    public func counterFunction(_ name: String, help: String, labels: [String: String] = [:],
                                _ read: @escaping @Sendable () -> Double) {
        function(name, help: help, kind: .counter, labels: labels, read)
    }

    private func function(_ rawName: String, help: String, kind: FunctionFamily.Kind,
                          labels: [String: String], _ read: @escaping @Sendable () -> Double) {
        let name = sanitizeName(rawName, colons: true)
        let family: FunctionFamily? = state.withLock { st in
            switch st.byName[name] {
            case .function(let f)? where f.kind == kind:
                return f
            case nil:
                let f = FunctionFamily(name: name, help: help, kind: kind)
                st.byName[name] = .function(f)
                st.order.append(.function(f))
                return f
            case _?:
                st.conflicts.append(name)
                return nil
            }
        }
        family?.set(labels: labels, read: read)
    }

    /// Prometheus text exposition format 0.0.4: `# HELP` / `# TYPE` once per family, families
    /// in registration order, series in creation order, label values escaped. Histograms as
    /// cumulative `_bucket{le="…"}` lines ending with `le="+Inf"`, then `_sum` and `_count`.
    /// Labelled families with no series yet are omitted (as client_golang does).
    public func render() -> String {
        // Snapshot under the lock, read values outside it: function readers may be slow-ish
        // (they read /proc) and must not hold up registrations on other threads.
        let families = state.withLock { $0.order }
        var out = ""
        out.reserveCapacity(families.count * 128)
        for family in families {
            switch family {
            case .counter(let f):
                let series = f.table.all
                if series.isEmpty { continue }
                header(&out, f.name, f.help, "counter")
                for s in series { sample(&out, f.name, s.labelText, String(s.value)) }
            case .gauge(let f):
                let series = f.table.all
                if series.isEmpty { continue }
                header(&out, f.name, f.help, "gauge")
                for s in series { sample(&out, f.name, s.labelText, String(s.value)) }
            case .histogram(let f):
                let series = f.table.all
                if series.isEmpty { continue }
                header(&out, f.name, f.help, "histogram")
                let les = f.buckets.map(formatDouble) + ["+Inf"]
                for s in series {
                    // One snapshot per series so buckets, +Inf and _count agree with each other.
                    let counts = s.bucketCounts()
                    let prefix = s.labelText.isEmpty ? "" : s.labelText + ","
                    var cumulative: UInt64 = 0
                    for (i, c) in counts.enumerated() {
                        cumulative = cumulative &+ c
                        sample(&out, f.name + "_bucket", prefix + "le=\"" + les[i] + "\"",
                               String(cumulative))
                    }
                    sample(&out, f.name + "_sum", s.labelText, formatDouble(s.sum))
                    sample(&out, f.name + "_count", s.labelText, String(cumulative))
                }
            case .function(let f):
                let series = f.all
                if series.isEmpty { continue }
                header(&out, f.name, f.help, f.kind.rawValue)
                for s in series { sample(&out, f.name, s.labelText, formatDouble(s.read())) }
            }
        }
        return out
    }

    private func header(_ out: inout String, _ name: String, _ help: String, _ type: String) {
        out += "# HELP " + name + " " + escapeHelp(help) + "\n"
        out += "# TYPE " + name + " " + type + "\n"
    }

    private func sample(_ out: inout String, _ name: String, _ labels: String, _ value: String) {
        out += name
        if !labels.isEmpty { out += "{" + labels + "}" }
        out += " " + value + "\n"
    }
}

// MARK: - Exposition text helpers

/// `a="x",b="y"` with values escaped; "" when there are no labels.
func renderLabelPairs(names: [String], values: [String]) -> String {
    var out = ""
    for (i, name) in names.enumerated() {
        if i > 0 { out += "," }
        out += name + "=\"" + escapeLabelValue(i < values.count ? values[i] : "") + "\""
    }
    return out
}

/// Label values: backslash, double quote and line feed must be escaped (format 0.0.4).
func escapeLabelValue(_ s: String) -> String {
    guard s.utf8.contains(where: { $0 == 0x5C || $0 == 0x22 || $0 == 0x0A }) else { return s }
    var out = ""
    for ch in s.unicodeScalars {
        switch ch {
        case "\\": out += "\\\\"
        case "\"": out += "\\\""
        case "\n": out += "\\n"
        default: out.unicodeScalars.append(ch)
        }
    }
    return out
}

/// HELP text: only backslash and line feed are escaped (format 0.0.4).
func escapeHelp(_ s: String) -> String {
    guard s.utf8.contains(where: { $0 == 0x5C || $0 == 0x0A }) else { return s }
    var out = ""
    for ch in s.unicodeScalars {
        switch ch {
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        default: out.unicodeScalars.append(ch)
        }
    }
    return out
}

/// Metric names `[a-zA-Z_:][a-zA-Z0-9_:]*`, label names the same without colons. Anything else
/// becomes `_` so a typo yields a parseable (if odd) name rather than a broken scrape.
func sanitizeName(_ s: String, colons: Bool) -> String {
    if s.isEmpty { return "_" }
    var bytes = Array(s.utf8)
    for i in bytes.indices {
        let b = bytes[i]
        let letter = (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || b == 0x5F
            || (colons && b == 0x3A)
        let digit = b >= 0x30 && b <= 0x39
        if !(letter || (digit && i > 0)) { bytes[i] = 0x5F }
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// Sample values and `le` bounds: integers without ".0" (`1`, `42`), otherwise Swift's shortest
/// round-trip form (`0.005`, `2.5e-05`), and Prometheus' spellings of the non-finite values.
func formatDouble(_ v: Double) -> String {
    if v.isNaN { return "NaN" }
    if v == .infinity { return "+Inf" }
    if v == -.infinity { return "-Inf" }
    // Below 2^53 every integral Double is an exact Int64, so the conversion cannot trap.
    if v == v.rounded(.towardZero) && v.magnitude < 9_007_199_254_740_992 {
        return String(Int64(v))
    }
    return v.description
}
