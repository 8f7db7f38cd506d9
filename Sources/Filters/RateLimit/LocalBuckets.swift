import Synchronization
import Telemetry

/// One limit as a token bucket, in the GCRA form (Generic Cell Rate Algorithm): instead of
/// a token count and a refill time, a bucket is one number, its theoretical arrival time
/// (TAT). `emission` is the time one token takes to refill (unit / requests_per_unit);
/// a bucket holds `burst` tokens. `now + burst × emission - TAT` is the tokens left, in time.
/// One word of state is what lets a bucket live in a single atomic and change with one CAS.
struct BucketLimit: Sendable, Equatable {
    let emission: UInt64
    let burst: UInt64
    /// `emission × (burst - 1)`: how far ahead of now the TAT may be for a request to pass.
    let tolerance: UInt64

    /// The largest `burst × emission` a bucket may span (25 days): the table keeps times
    /// modulo 2^52 ns (52 days) and needs half of that range to tell past from future.
    static let maxSpanNanos: UInt64 = 25 * 24 * 3600 * 1_000_000_000

    /// Nil when the numbers cannot make a bucket (zero, overflow, span beyond 25 days).
    init?(requestsPerUnit: UInt64, unitNanos: UInt64, burst: UInt64) {
        guard requestsPerUnit > 0, burst > 0, unitNanos > 0 else { return nil }
        let e = max(1, unitNanos / requestsPerUnit)
        let (span, o1) = e.multipliedReportingOverflow(by: burst)
        guard !o1, span <= Self.maxSpanNanos else { return nil }
        emission = e
        self.burst = burst
        tolerance = span - e
    }

    /// One request at `now` against a bucket whose TAT is `ahead` ns past now (0 when the
    /// bucket is full or new). Returns the decision and, when allowed, the new `ahead`.
    @inline(__always)
    func take(ahead: UInt64) -> (decision: BucketDecision, newAhead: UInt64?) {
        if ahead > tolerance {
            let retry = ahead - tolerance
            return (BucketDecision(allowed: false, remaining: 0, resetNanos: retry, retryAfterNanos: retry), nil)
        }
        let next = ahead + emission   // ≤ tolerance + emission = burst × emission: no overflow
        let left = (tolerance + emission - next) / emission
        return (BucketDecision(allowed: true, remaining: left, resetNanos: next, retryAfterNanos: 0), next)
    }
}

/// What one bucket said about one request.
struct BucketDecision: Sendable, Equatable {
    var allowed: Bool
    /// Whole tokens left after this request.
    var remaining: UInt64
    /// Allowed: time until the bucket is full again. Limited: time until the next token.
    var resetNanos: UInt64
    /// Limited: time until a request would pass.
    var retryAfterNanos: UInt64
}

/// The local buckets of every worker of the process: a fixed-size, 4-way set-associative table
/// of atomic words, shared without a lock.
///
/// Why atomics and not per-worker shards: a shard per worker splits each limit N ways, and
/// SO_REUSEPORT spreads clients unevenly over workers (one busy client lands on one worker), so a
/// fair split would need rebalancing; one shared bucket per key is exact whatever the spread.
/// The cost is one CAS on a shared cache line per limited key per request, which is what the
/// hot path does anyway for the metrics it touches.
///
/// Synchronization: each slot is two `Atomic<UInt64>` words, `key` (a 64-bit hash of the rule
/// and the descriptor values, 0 = empty) and `state` (the key's 12-bit tag in the high bits, the
/// TAT modulo 2^52 ns in the low bits). A request finds its key in the 4 ways of its set and
/// updates `state` with a CAS loop. A new key takes an empty way or evicts the most idle one
/// (a bucket whose TAT is in the past is full, so evicting it loses nothing), swapping `key` with
/// a CAS; `state` is then claimed by whichever CAS first writes the new tag (a state word whose
/// tag is not the key's counts as a full bucket). A race between two new keys for one way can at
/// worst hand a key a fresh bucket: never a crash, never a lock. Memory: 16 bytes per slot,
/// fixed at creation (`max_keys`, rounded up to a power of two).
final class LocalBucketTable: @unchecked Sendable {
    static let ways = 4
    private static let timeBits: UInt64 = 52
    private static let timeMask: UInt64 = (1 << 52) - 1
    private static let half: UInt64 = 1 << 51

    let capacity: Int
    private let setMask: UInt64
    private let keys: UnsafeMutablePointer<Atomic<UInt64>>
    private let states: UnsafeMutablePointer<Atomic<UInt64>>
    /// Monotonic ns at creation: times are stored relative to it.
    private let epoch: UInt64
    private let evictions: Counter?
    private let occupied = Atomic<Int>(0)

    /// `maxKeys` is rounded up to a power of two of at least 64 slots.
    init(maxKeys: Int, epoch: UInt64, evictions: Counter?) {
        var slots = 64
        while slots < maxKeys && slots < (1 << 26) { slots <<= 1 }
        capacity = slots
        setMask = UInt64(slots / Self.ways - 1)
        keys = .allocate(capacity: slots)
        states = .allocate(capacity: slots)
        for i in 0..<slots {
            (keys + i).initialize(to: Atomic<UInt64>(0))
            (states + i).initialize(to: Atomic<UInt64>(0))
        }
        self.epoch = epoch
        self.evictions = evictions
    }

    deinit {
        keys.deinitialize(count: capacity)
        states.deinitialize(count: capacity)
        keys.deallocate()
        states.deallocate()
    }

    /// Keys currently held (approximate under concurrent inserts).
    var count: Int { occupied.load(ordering: .relaxed) }

    /// One request for the bucket `hash` at monotonic time `now`.
    func take(hash rawHash: UInt64, now: UInt64, limit: BucketLimit, shard: Int = 0) -> BucketDecision {
        let hash = rawHash == 0 ? 1 : rawHash
        let tag = hash >> Self.timeBits
        let nowRel = (now &- epoch) & Self.timeMask
        let base = Int(truncatingIfNeeded: (hash & setMask)) &* Self.ways
        var attempts = 0
        while true {
            // Look for the key in its set.
            for w in 0..<Self.ways where keys[base + w].load(ordering: .acquiring) == hash {
                return update(slot: base + w, tag: tag, nowRel: nowRel, limit: limit)
            }
            // Not there: claim an empty or the most idle way.
            var victim = base
            var victimKey: UInt64 = 0
            var victimAhead = UInt64.max
            for w in 0..<Self.ways {
                let k = keys[base + w].load(ordering: .acquiring)
                if k == 0 { victim = base + w; victimKey = 0; victimAhead = 0; break }
                let a = ahead(states[base + w].load(ordering: .relaxed), tag: nil, nowRel: nowRel)
                if a < victimAhead { victim = base + w; victimKey = k; victimAhead = a }
            }
            let (swapped, _) = keys[victim].compareExchange(expected: victimKey, desired: hash,
                                                            ordering: .acquiringAndReleasing)
            if swapped {
                if victimKey == 0 { occupied.wrappingAdd(1, ordering: .relaxed) } else { evictions?.increment(shard: shard) }
                return update(slot: victim, tag: tag, nowRel: nowRel, limit: limit)
            }
            attempts += 1
            if attempts >= 4 {
                // Heavy churn on this set: decide on a fresh bucket rather than spin.
                return limit.take(ahead: 0).decision
            }
        }
    }

    /// How far the stored TAT is ahead of now; 0 when it is in the past, the slot is empty or
    /// (with `tag`) the state belongs to another key.
    @inline(__always)
    private func ahead(_ state: UInt64, tag: UInt64?, nowRel: UInt64) -> UInt64 {
        if state == 0 { return 0 }
        if let tag, state >> Self.timeBits != tag { return 0 }
        let d = ((state & Self.timeMask) &- nowRel) & Self.timeMask
        return d < Self.half ? d : 0
    }

    private func update(slot: Int, tag: UInt64, nowRel: UInt64, limit: BucketLimit) -> BucketDecision {
        var current = states[slot].load(ordering: .relaxed)
        while true {
            let a = ahead(current, tag: tag, nowRel: nowRel)
            // A stored TAT further ahead than any bucket of this limit can reach belongs to
            // an older limit of the same key; `take` treats anything above tolerance as limited,
            // which is right for a limit that just got stricter.
            let (decision, newAhead) = limit.take(ahead: a)
            guard let newAhead else { return decision }
            let desired = (tag << Self.timeBits) | ((nowRel &+ newAhead) & Self.timeMask)
            let (done, seen) = states[slot].compareExchange(expected: current, desired: desired == 0 ? 1 : desired,
                                                            ordering: .relaxed)
            if done { return decision }
            current = seen
        }
    }
}

/// One table per `max_keys` for the whole process, kept across reloads: a rule that did not
/// change keeps its buckets (the key hash includes the rule's parameters, so a changed rule
/// starts fresh).
final class LocalBucketTables: Sendable {
    static let shared = LocalBucketTables()
    private let tables = Mutex<[Int: LocalBucketTable]>([:])

    func table(maxKeys: Int, metrics: MetricsRegistry) -> LocalBucketTable {
        tables.withLock { t in
            if let existing = t[maxKeys] { return existing }
            let ev = metrics.counter("outrider_ratelimit_local_evictions_total",
                                     help: "Local buckets evicted to make room for new keys (table full).").labels()
            let table = LocalBucketTable(maxKeys: maxKeys, epoch: 0, evictions: ev)
            metrics.gaugeFunction("outrider_ratelimit_local_keys", help: "Keys held in the local bucket table.",
                                  labels: ["max_keys": String(maxKeys)]) { Double(table.count) }
            t[maxKeys] = table
            return table
        }
    }
}
