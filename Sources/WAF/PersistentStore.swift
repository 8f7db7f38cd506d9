import Synchronization

/// Collections that outlive a request (`initcol:ip=…`, GLOBAL, RESOURCE, USER, SESSION): one
/// record per (collection, key), shared by every worker thread and every rule set (a reload keeps
/// them, as ModSecurity's collection storage does). Bounded: at most `maxRecords` records (the
/// least recently used go first), `maxVars` variables per record and `maxValue` bytes per value
/// (at most ≈ 80 MB however the rules use them; CRS keeps a handful of counters per client).
/// `expirevar` deadlines are kept per variable; expired variables are dropped when loaded.
final class PersistentStore: Sendable {
    static let shared = PersistentStore()

    struct Record {
        var vars: [String: (key: Bytes, value: Bytes)] = [:]
        /// Lowercased variable name → expiry (seconds since the epoch).
        var expiry: [String: UInt64] = [:]
        var lastUse: UInt64 = 0
    }

    let maxRecords: Int
    let maxVars: Int
    let maxValue: Int
    private let records = Mutex<[String: Record]>([:])

    init(maxRecords: Int = 10_000, maxVars: Int = 32, maxValue: Int = 256) {
        self.maxRecords = maxRecords; self.maxVars = maxVars; self.maxValue = maxValue
    }

    private static func id(_ c: Collection, _ key: Bytes) -> String { c.rawValue + "\u{0}" + keyString(key) }

    /// The record's variables, without the expired ones, and their deadlines.
    func load(_ c: Collection, _ key: Bytes, now: UInt64) -> (VarStore, [String: UInt64]) {
        let rec = records.withLock { m -> Record? in
            guard var r = m[PersistentStore.id(c, key)] else { return nil }
            r.lastUse = now
            m[PersistentStore.id(c, key)] = r
            return r
        }
        guard let rec else { return (VarStore(), [:]) }
        var store = VarStore()
        var expiry: [String: UInt64] = [:]
        for (k, v) in rec.vars {
            if let e = rec.expiry[k] {
                if e <= now { continue }
                expiry[k] = e
            }
            store.set(lower: k, v.key, v.value)
        }
        return (store, expiry)
    }

    /// Writes the record back (the transaction's view replaces the stored one).
    func save(_ c: Collection, _ key: Bytes, _ store: VarStore, expiry: [String: UInt64], now: UInt64) {
        var rec = Record(lastUse: now)
        store.forEach { k, v in
            guard rec.vars.count < maxVars else { return }
            rec.vars[k] = (v.key, v.value.count > maxValue ? Array(v.value.prefix(maxValue)) : v.value)
            if let e = expiry[k] { rec.expiry[k] = e }
        }
        records.withLock { m in
            m[PersistentStore.id(c, key)] = rec
            if m.count > maxRecords {
                // Evict the least recently used tenth in one pass (rare: only at the bound).
                let victims = m.sorted { $0.value.lastUse < $1.value.lastUse }.prefix(max(1, maxRecords / 10))
                for (k, _) in victims { m[k] = nil }
            }
        }
    }

    var count: Int { records.withLock { $0.count } }
}
