import Synchronization

/// The series of one family, keyed by label values, kept in creation order for rendering.
/// Looking a series up takes the family's lock; that happens at start-up or on first use of a
/// label combination, and callers keep the returned handle for the hot path.
final class SeriesTable<Series: AnyObject & Sendable>: Sendable {
    let labelNames: [String]
    private let make: @Sendable (String) -> Series
    private let state = Mutex<(byValues: [[String]: Series], order: [Series])>(([:], []))

    init(labelNames: [String], make: @escaping @Sendable (String) -> Series) {
        self.labelNames = labelNames
        self.make = make
        // A family without labels has exactly one series; create it now so it renders (as 0)
        // from the first scrape, before anything happened.
        if labelNames.isEmpty { _ = series([]) }
    }

    func series(_ given: [String]) -> Series {
        // Wrong arity is a caller bug; pad with "" / drop extras instead of trapping, so the
        // data still lands in a (visibly odd) series rather than crashing the proxy.
        var values = Array(given.prefix(labelNames.count))
        while values.count < labelNames.count { values.append("") }
        return state.withLock { st in
            if let s = st.byValues[values] { return s }
            let s = make(renderLabelPairs(names: labelNames, values: values))
            st.byValues[values] = s
            st.order.append(s)
            return s
        }
    }

    var all: [Series] { state.withLock { $0.order } }
}

public final class CounterFamily: Sendable {
    public let name: String
    public let help: String
    let table: SeriesTable<Counter>

    init(name: String, help: String, labelNames: [String]) {
        self.name = name
        self.help = help
        self.table = SeriesTable(labelNames: labelNames) { Counter(labelText: $0) }
    }

    public var labelNames: [String] { table.labelNames }
    /// Values in `labelNames` order; the same values always return the same `Counter`.
    public func labels(_ values: String...) -> Counter { table.series(values) }
    public func labels(_ values: [String]) -> Counter { table.series(values) }
}

public final class GaugeFamily: Sendable {
    public let name: String
    public let help: String
    let table: SeriesTable<Gauge>

    init(name: String, help: String, labelNames: [String]) {
        self.name = name
        self.help = help
        self.table = SeriesTable(labelNames: labelNames) { Gauge(labelText: $0) }
    }

    public var labelNames: [String] { table.labelNames }
    public func labels(_ values: String...) -> Gauge { table.series(values) }
    public func labels(_ values: [String]) -> Gauge { table.series(values) }
}

public final class HistogramFamily: Sendable {
    public let name: String
    public let help: String
    /// Upper bounds as used: sorted, finite, unique (+Inf is implicit).
    public let buckets: [Double]
    let table: SeriesTable<Histogram>

    init(name: String, help: String, labelNames: [String], buckets: [Double], sumScale: Double) {
        self.name = name
        self.help = help
        let bounds = Array(Set(buckets.filter { $0.isFinite })).sorted()
        self.buckets = bounds
        self.table = SeriesTable(labelNames: labelNames) {
            Histogram(labelText: $0, bounds: bounds, sumScale: sumScale)
        }
    }

    public var labelNames: [String] { table.labelNames }
    public func labels(_ values: String...) -> Histogram { table.series(values) }
    public func labels(_ values: [String]) -> Histogram { table.series(values) }
}

/// Gauges and counters whose value is computed at scrape time. Series are keyed by their
/// (sorted) label set; registering the same labels again replaces the reader, so reload code
/// can re-register without duplicating lines.
final class FunctionFamily: Sendable {
    enum Kind: String, Sendable { case gauge, counter }
    let name: String
    let help: String
    let kind: Kind
    private let state = Mutex<[(labelText: String, read: @Sendable () -> Double)]>([])

    init(name: String, help: String, kind: Kind) {
        self.name = name
        self.help = help
        self.kind = kind
    }

    func set(labels: [String: String], read: @escaping @Sendable () -> Double) {
        let sorted = labels.sorted { $0.key < $1.key }
        let text = renderLabelPairs(names: sorted.map { sanitizeName($0.key, colons: false) },
                                    values: sorted.map(\.value))
        state.withLock { series in
            if let i = series.firstIndex(where: { $0.labelText == text }) {
                series[i].read = read
            } else {
                series.append((text, read))
            }
        }
    }

    var all: [(labelText: String, read: @Sendable () -> Double)] { state.withLock { $0 } }
}
