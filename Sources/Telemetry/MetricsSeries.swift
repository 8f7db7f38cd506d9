import Synchronization

/// One monotonically increasing series. Workers call `increment(shard:)` with their worker
/// number; the admin thread reads `value`. No locks: a relaxed atomic add on the caller's shard.
public final class Counter: Sendable {
    @usableFromInline let cells: ShardedCells
    /// `name="value",…` already escaped, without braces; "" when the family has no labels.
    let labelText: String

    init(labelText: String) {
        self.cells = ShardedCells(cellsPerShard: 1)
        self.labelText = labelText
    }

    @inlinable
    public func increment(shard: Int) {
        cells.add(1, shard: shard, cell: 0)
    }

    /// Adds `n`; wraps at 2^64 rather than trapping (Prometheus treats a drop as a reset).
    @inlinable
    public func add(_ n: UInt64, shard: Int) {
        cells.add(n, shard: shard, cell: 0)
    }

    /// Sum over all shards, read with relaxed loads.
    public var value: UInt64 { cells.total(cell: 0) }
}

/// A value that goes up and down (open connections, in-flight requests).
///
/// Two ways to write it, not to be mixed on one gauge:
/// - `add(_:shard:)` from any number of threads, each on its own shard (inc on accept, dec on
///   close). Each shard holds an Int64 as a bit pattern; shards are summed with wrapping, so a
///   worker decrementing what another incremented still totals correctly.
/// - `set(_:)` for a gauge with a single writer (queue depth sampled by its owner, last reload
///   time). It zeroes every shard but 0, then stores the value into shard 0. A scrape racing a
///   `set` may transiently see the old shard 0 alone; concurrent `add`s from other threads would
///   be lost, which is why a gauge is either added to or set, never both.
public final class Gauge: Sendable {
    @usableFromInline let cells: ShardedCells
    let labelText: String

    init(labelText: String) {
        self.cells = ShardedCells(cellsPerShard: 1)
        self.labelText = labelText
    }

    @inlinable
    public func add(_ n: Int64, shard: Int) {
        cells.add(UInt64(bitPattern: n), shard: shard, cell: 0)
    }

    @inlinable
    public func increment(shard: Int) { add(1, shard: shard) }

    @inlinable
    public func decrement(shard: Int) { add(-1, shard: shard) }

    /// Single-writer set; see the type's documentation.
    public func set(_ v: Int64) {
        for slot in 1..<MetricsShard.slotCount { cells.store(0, slot: slot, cell: 0) }
        cells.store(UInt64(bitPattern: v), slot: 0, cell: 0)
    }

    public var value: Int64 { Int64(bitPattern: cells.total(cell: 0)) }
}

/// A distribution with fixed upper bounds (Prometheus `le`, inclusive).
///
/// Per shard the cells are: one non-cumulative count per bucket, one for values above the last
/// bound (+Inf), then the sum. `count` is the sum of the bucket cells, so a scrape's `_count`
/// always equals its `le="+Inf"` bucket and an observation costs two atomic adds, not three.
///
/// The sum is fixed point to avoid floating-point atomics: each observation is rounded to
/// `1/sumScale` units (default 1e6 — microseconds for latencies in seconds) and added as an Int64
/// bit pattern, so negative observations work too. Values beyond ±9.2e18 units are clamped. At
/// 1e6 the running sum wraps after ~9.2e12 observed seconds (≈290 000 years of latency); a
/// histogram of large quantities such as bytes should pass `sumScale: 1`.
/// NaN observations are dropped: they belong to no bucket and would poison the sum.
public final class Histogram: Sendable {
    @usableFromInline let cells: ShardedCells
    /// Upper bounds, ascending, finite, unique.
    @usableFromInline let bounds: [Double]
    @usableFromInline let sumScale: Double
    let labelText: String

    init(labelText: String, bounds: [Double], sumScale: Double) {
        self.bounds = bounds
        self.sumScale = sumScale
        self.labelText = labelText
        // buckets + overflow + sum
        self.cells = ShardedCells(cellsPerShard: bounds.count + 2)
    }

    @usableFromInline var sumCell: Int { bounds.count + 1 }

    /// Records `v` (seconds, for latencies).
    @inlinable
    public func observe(_ v: Double, shard: Int) {
        if v.isNaN { return }
        // Binary search for the first bound >= v; bucket lists are short (≈10–20) so this is a
        // handful of compares. Falls through to `bounds.count` (the +Inf bucket).
        var lo = 0
        var hi = bounds.count
        while lo < hi {
            let mid = (lo &+ hi) >> 1
            if v <= bounds[mid] { hi = mid } else { lo = mid &+ 1 }
        }
        let slot = ShardedCells.slot(shard)
        cells.cell(slot: slot, lo).pointee.wrappingAdd(1, ordering: .relaxed)
        cells.cell(slot: slot, sumCell).pointee.wrappingAdd(
            UInt64(bitPattern: Self.fixedPoint(v * sumScale)), ordering: .relaxed)
    }

    /// Rounds and clamps into Int64 without trapping (Int64(Double) traps when out of range).
    @usableFromInline @inline(__always)
    static func fixedPoint(_ x: Double) -> Int64 {
        let r = x.rounded()
        // 2^63 is exactly representable; anything at or beyond it (or an infinity) clamps.
        if r >= 9_223_372_036_854_775_808.0 { return .max }
        if r < -9_223_372_036_854_775_808.0 { return .min }
        return Int64(r)
    }

    /// Number of observations (all shards).
    public var count: UInt64 {
        var total: UInt64 = 0
        for b in 0...bounds.count { total = total &+ cells.total(cell: b) }
        return total
    }

    /// Sum of observations, from the fixed-point cells.
    public var sum: Double {
        Double(Int64(bitPattern: cells.total(cell: sumCell))) / sumScale
    }

    /// Non-cumulative counts per bucket, the last one being +Inf.
    func bucketCounts() -> [UInt64] {
        (0...bounds.count).map { cells.total(cell: $0) }
    }
}
