/// Config durations: "250ms", "5s", "1m", "1h", "1m30s", "1.5s", or a bare number of seconds.
/// Values are nanoseconds as UInt64. Parsing is exact decimal arithmetic (no floating point)
/// and overflow-checked, so any input yields a value or an error, never a trap.
public enum ConfigDuration {
    /// Upper bound for any configured duration: one year. Keeps `now + timeout` far from overflow.
    public static let maxNanos: UInt64 = 365 * 24 * 3600 * nanosPerSecond

    private static let units: [(suffix: String, nanos: UInt64)] = [
        // Longer suffixes first so "ms" is not read as "m" followed by garbage.
        ("ms", 1_000_000), ("us", 1_000), ("µs", 1_000), ("ns", 1),
        ("h", 3600 * nanosPerSecond), ("m", 60 * nanosPerSecond), ("s", nanosPerSecond),
    ]

    /// Parses a duration string. A bare number (no unit) is seconds.
    public static func parse(_ text: String) -> UInt64? {
        let s = text.trimmingASCIIWhitespace()
        guard !s.isEmpty else { return nil }
        var scalars = Substring(s)
        // A bare number: the whole text is one number of seconds.
        if let whole = parseDecimal(scalars, unit: nanosPerSecond) {
            return whole <= maxNanos ? whole : nil
        }
        var total: UInt64 = 0
        while !scalars.isEmpty {
            // Number part.
            var end = scalars.startIndex
            while end < scalars.endIndex, scalars[end].isASCII, scalars[end].isNumber || scalars[end] == "." {
                end = scalars.index(after: end)
            }
            let number = scalars[scalars.startIndex..<end]
            guard !number.isEmpty else { return nil }
            let rest = scalars[end...]
            guard let unit = units.first(where: { rest.hasPrefix($0.suffix) }) else { return nil }
            guard let part = parseDecimal(number, unit: unit.nanos) else { return nil }
            let (sum, overflow) = total.addingReportingOverflow(part)
            guard !overflow else { return nil }
            total = sum
            scalars = rest.dropFirst(unit.suffix.count)
        }
        return total <= maxNanos ? total : nil
    }

    /// Seconds given as a YAML number.
    public static func fromSeconds(_ seconds: Double) -> UInt64? {
        guard seconds.isFinite, seconds >= 0, seconds <= Double(maxNanos / nanosPerSecond) else { return nil }
        let nanos = (seconds * 1e9).rounded()
        guard let n = UInt64(exactly: nanos), n <= maxNanos else { return nil }
        return n
    }

    /// The shortest exact form in one unit: "0s", "10s", "1m", "250ms", "1500us", "7ns".
    /// `parse(format(x)) == x` for every x ≤ maxNanos.
    public static func format(_ nanos: UInt64) -> String {
        if nanos == 0 { return "0s" }
        for (suffix, unit) in [("h", 3600 * nanosPerSecond), ("m", 60 * nanosPerSecond), ("s", nanosPerSecond),
                               ("ms", 1_000_000), ("us", 1_000)] where nanos % unit == 0 {
            return "\(nanos / unit)\(suffix)"
        }
        return "\(nanos)ns"
    }

    /// "12", "1.5", ".25" times `unit` nanoseconds; fraction digits beyond nanosecond precision
    /// are rounded down.
    private static func parseDecimal(_ text: Substring, unit: UInt64) -> UInt64? {
        var intPart: UInt64 = 0
        var fracNumerator: UInt64 = 0
        var fracDenominator: UInt64 = 1
        var seenDot = false
        var digits = 0
        for ch in text.utf8 {
            if ch == UInt8(ascii: ".") {
                guard !seenDot else { return nil }
                seenDot = true
                continue
            }
            guard ch >= UInt8(ascii: "0"), ch <= UInt8(ascii: "9") else { return nil }
            digits += 1
            let d = UInt64(ch - UInt8(ascii: "0"))
            if seenDot {
                // Beyond 18 digits a digit cannot change the nanosecond result for units ≤ 1h.
                if fracDenominator < 1_000_000_000_000_000_000 {
                    fracNumerator = fracNumerator * 10 + d
                    fracDenominator *= 10
                }
            } else {
                let (m, o1) = intPart.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(d)
                guard !o1, !o2 else { return nil }
                intPart = a
            }
        }
        guard digits > 0 else { return nil }
        let (whole, o1) = intPart.multipliedReportingOverflow(by: unit)
        guard !o1 else { return nil }
        // fracNumerator < fracDenominator, so the quotient is below `unit` and fits; the
        // product needs 128 bits.
        let product = fracNumerator.multipliedFullWidth(by: unit)
        let frac = fracDenominator.dividingFullWidth(product).quotient
        let (sum, o2) = whole.addingReportingOverflow(frac)
        guard !o2 else { return nil }
        return sum
    }
}

extension String {
    func trimmingASCIIWhitespace() -> String {
        let u = utf8
        var start = u.startIndex
        var end = u.endIndex
        func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D }
        while start < end, isSpace(u[start]) { start = u.index(after: start) }
        while end > start, isSpace(u[u.index(before: end)]) { end = u.index(before: end) }
        return String(self[start..<end])
    }
}
