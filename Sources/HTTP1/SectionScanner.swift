/// What a section being scanned looks like and how big it may grow.
struct SectionRules: Sendable {
    /// Heads start with a request/status line (and may be preceded by empty lines); trailers do not.
    var hasStartLine: Bool
    var maxBytes: Int
    var maxFieldLines: Int
    /// Request-target budget checked while the request line is still arriving; `Int.max` disables it.
    var maxTargetLength: Int
    var tooLargeReason: String
}

/// RFC 9112 §2.2 asks servers to skip "at least one" empty line before a request; allow a few, not a stream.
let maxSkippedEmptyLines = 16

/// Finds the end of a head or trailer section (the empty line) incrementally.
///
/// While a section is incomplete the caller keeps its bytes in place and hands the same front again
/// with more appended; the scanner resumes at `scanned`, so a client trickling one byte per read costs
/// O(n) in total, not O(n²). Every limit is checked at the byte that crosses it, so the outcome
/// (including which error) does not depend on how the input was split across reads.
struct SectionScanner: Sendable {
    /// Bytes from the front already examined.
    private(set) var scanned = 0
    /// Where the start line (or first trailer line) begins, after skipped empty lines.
    private(set) var sectionStart = 0
    /// Non-empty lines after the start line seen so far.
    private(set) var fieldLines = 0
    private var lineStart = 0
    private var sawStartLine = false
    private var skippedEmptyLines = 0
    private var firstSpace = -1
    private var secondSpace = -1

    /// True when nothing but empty lines (or nothing at all) has been seen.
    var hasOnlyEmptyLines: Bool { scanned == sectionStart }

    /// Returns the offset just past the section's final empty line, or nil if more bytes are needed.
    mutating func scan(_ bytes: UnsafeBufferPointer<UInt8>, rules: SectionRules) throws(HTTP1ParseError) -> Int? {
        // State lives in locals inside the loop (written back on every exit) so the hot path is
        // a register-only skip over ordinary bytes.
        let count = bytes.count
        var i = scanned
        var lineStart = self.lineStart
        var sawStartLine = self.sawStartLine
        defer {
            self.lineStart = lineStart
            self.sawStartLine = sawStartLine
        }
        var limit = Self.limit(from: sectionStart, rules.maxBytes)
        let tracksTarget = rules.hasStartLine && rules.maxTargetLength != Int.max
        while true {
            let end = count < limit ? count : limit
            if tracksTarget && !sawStartLine {
                while i < end {
                    let b = bytes[i]
                    if b <= asciiCR { break }
                    if b == asciiSP {
                        if firstSpace < 0 { firstSpace = i } else if secondSpace < 0 { secondSpace = i }
                    } else if firstSpace >= 0 && secondSpace < 0 && i &- firstSpace > rules.maxTargetLength {
                        scanned = i
                        throw .uriTooLong
                    }
                    i &+= 1
                }
            } else {
                while i < end && bytes[i] > asciiCR { i &+= 1 }
            }
            if i >= count { break }
            if i >= limit { throw .headersTooLarge(rules.tooLargeReason) }
            let b = bytes[i]
            if b == asciiCR {
                if i &+ 1 >= count { break }  // decide once the next byte arrives
                if bytes[i &+ 1] != asciiLF { throw .badRequest("bare CR") }
                i &+= 1
                continue
            }
            if b == asciiLF {
                var contentEnd = i
                if contentEnd > lineStart && bytes[contentEnd &- 1] == asciiCR { contentEnd &-= 1 }
                i &+= 1
                if contentEnd == lineStart {
                    if rules.hasStartLine && !sawStartLine {
                        skippedEmptyLines &+= 1
                        if skippedEmptyLines > maxSkippedEmptyLines { throw .badRequest("too many empty lines before start line") }
                        lineStart = i
                        sectionStart = i
                        limit = Self.limit(from: i, rules.maxBytes)
                        continue
                    }
                    scanned = i
                    return i
                }
                if rules.hasStartLine && !sawStartLine {
                    sawStartLine = true
                } else {
                    fieldLines &+= 1
                    if fieldLines > rules.maxFieldLines { throw .headersTooLarge("too many header fields") }
                }
                lineStart = i
                continue
            }
            i &+= 1  // other control bytes: the line parsers reject them where they matter
        }
        scanned = i
        return nil
    }

    @inline(__always)
    private static func limit(from start: Int, _ maxBytes: Int) -> Int {
        let (sum, overflow) = start.addingReportingOverflow(maxBytes)
        return overflow ? Int.max : sum
    }
}
