import Synchronization

/// How worker threads pick the slot they increment.
///
/// Every counter, gauge and histogram keeps one group of cells per shard. Worker `n` passes
/// `shard: n`, so two workers never write the same cache line and increments stay uncontended
/// relaxed atomic adds. Shards `0..<workerCount` belong to workers; everything else (the admin
/// thread, the exporter, a 17th worker, a negative number by mistake) lands on the one `shared`
/// shard. That shard is still correct — the adds are atomic — only contended.
public enum MetricsShard {
    /// Shards reserved for worker threads (worker numbers `0..<16`).
    public static let workerCount = 16
    /// The spare shard non-worker threads pass (any out-of-range index maps here too).
    public static let shared = 16
    /// Slots allocated per series: the worker shards plus the shared one.
    public static let slotCount = 17
}

/// Bytes between shards. 64 is the cache-line size on x86-64 and on the arm64 cores we run on;
/// starting each shard's cells on its own line is what keeps workers from invalidating each
/// other's lines (false sharing). We accept the adjacent-line prefetcher's occasional pairing
/// rather than doubling every series to 128 bytes per shard.
@usableFromInline let cacheLineBytes = 64

/// A block of `Atomic<UInt64>` cells, `cellsPerShard` per shard, each shard's group starting on
/// its own cache line:
///
///     shard 0: [c0 c1 … c(k-1) pad…]  ← 64·m bytes
///     shard 1: [c0 c1 … c(k-1) pad…]
///     …        (17 shards)
///
/// An array of `Atomic` is impossible (`Atomic` is non-copyable and must not move), so the cells
/// live in one raw allocation aligned to 64 bytes and are addressed by offset. The class owns the
/// allocation; cells are only touched through atomic operations, which is why `@unchecked
/// Sendable` is sound here.
@usableFromInline
final class ShardedCells: @unchecked Sendable {
    @usableFromInline let base: UnsafeMutableRawPointer
    @usableFromInline let cellsPerShard: Int
    /// Bytes per shard: `cellsPerShard × 8` rounded up to a multiple of 64.
    @usableFromInline let shardStride: Int

    init(cellsPerShard requested: Int) {
        let cells = max(1, requested)
        let cellBytes = MemoryLayout<Atomic<UInt64>>.stride
        let raw = cells * cellBytes
        let stride = (raw + cacheLineBytes - 1) / cacheLineBytes * cacheLineBytes
        self.cellsPerShard = cells
        self.shardStride = stride
        self.base = UnsafeMutableRawPointer.allocate(
            byteCount: stride * MetricsShard.slotCount, alignment: cacheLineBytes)
        for shard in 0..<MetricsShard.slotCount {
            for cell in 0..<cells {
                (base + shard * stride + cell * cellBytes)
                    .bindMemory(to: Atomic<UInt64>.self, capacity: 1)
                    .initialize(to: Atomic<UInt64>(0))
            }
        }
    }

    deinit {
        // Atomic<UInt64> has a trivial deinit, so releasing the raw block is enough.
        base.deallocate()
    }

    /// Maps a caller's shard number to a slot; out-of-range numbers share the spare slot
    /// instead of trapping or writing out of bounds.
    @usableFromInline @inline(__always)
    static func slot(_ shard: Int) -> Int {
        // One unsigned compare rejects both negatives and >= workerCount.
        UInt(bitPattern: shard) < UInt(MetricsShard.workerCount) ? shard : MetricsShard.shared
    }

    /// The cell; `shard` must already be a slot and `cell < cellsPerShard` (internal callers
    /// guarantee both, so wrapping arithmetic cannot overflow).
    @usableFromInline @inline(__always)
    func cell(slot: Int, _ cell: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        (base + (slot &* shardStride &+ cell &* MemoryLayout<Atomic<UInt64>>.stride))
            .assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    /// Hot path: one relaxed wrapping add on the caller's own cache line.
    @usableFromInline @inline(__always)
    func add(_ n: UInt64, shard: Int, cell index: Int) {
        cell(slot: Self.slot(shard), index).pointee.wrappingAdd(n, ordering: .relaxed)
    }

    /// Sum of one cell across all shards (scrape path). Relaxed loads: a scrape may miss an
    /// increment that is in flight, never see a torn value; wrapping because counters wrap.
    func total(cell index: Int) -> UInt64 {
        var sum: UInt64 = 0
        for s in 0..<MetricsShard.slotCount {
            sum = sum &+ cell(slot: s, index).pointee.load(ordering: .relaxed)
        }
        return sum
    }

    func store(_ v: UInt64, slot: Int, cell index: Int) {
        cell(slot: slot, index).pointee.store(v, ordering: .relaxed)
    }
}
