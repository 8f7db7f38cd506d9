#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import OutriderCore

/// Registers the process-level series the operator's SLIs need (SLIS.md: proxy CPU, resource
/// blow-up, availability heartbeat, crash/restart rate, incompatible update):
///
/// - `process_cpu_seconds_total` (counter): utime+stime from /proc/self/stat ÷ `_SC_CLK_TCK`
/// - `process_resident_memory_bytes`: /proc/self/statm resident pages × page size
/// - `process_open_fds`: entries of /proc/self/fd
/// - `process_start_time_seconds`: wall clock when this is called (once, at start-up)
/// - `outrider_build_info{version="…"} 1`
/// - `outrider_uptime_seconds`: monotonic seconds since this call (the heartbeat)
///
/// Everything is read with plain open/read at scrape time; a read that fails reports 0 rather
/// than failing the scrape. Off Linux (developer Macs) the /proc series read 0.
public func registerProcessMetrics(_ r: MetricsRegistry, version: String) {
    let startWall = Double(wallClockNanos()) / 1e9
    let startMono = monotonicNanos()

    r.counterFunction("process_cpu_seconds_total",
                      help: "Total user and system CPU time spent in seconds.") {
        ProcFS.cpuSeconds() ?? 0
    }
    r.gaugeFunction("process_resident_memory_bytes", help: "Resident memory size in bytes.") {
        ProcFS.residentBytes() ?? 0
    }
    r.gaugeFunction("process_open_fds", help: "Number of open file descriptors.") {
        ProcFS.openFDs() ?? 0
    }
    r.gaugeFunction("process_start_time_seconds",
                    help: "Start time of the process since unix epoch in seconds.") {
        startWall
    }
    r.gaugeFunction("outrider_build_info", help: "Outrider build information; the value is always 1.",
                    labels: ["version": version]) {
        1
    }
    r.gaugeFunction("outrider_uptime_seconds", help: "Seconds since Outrider started.") {
        // Monotonic, so a wall-clock step never makes uptime jump or go negative.
        let now = monotonicNanos()
        return now >= startMono ? Double(now - startMono) / 1e9 : 0
    }
}

/// Minimal /proc readers. No Foundation: the proxy binary stays small and these run on the
/// admin thread at every scrape.
enum ProcFS {
    /// utime (field 14) + stime (field 15) of /proc/self/stat, in seconds.
    static func cpuSeconds() -> Double? {
        guard let bytes = readSmallFile("/proc/self/stat") else { return nil }
        // Field 2 (comm) is in parentheses and may contain spaces or ')' itself; fields are
        // counted from after the LAST ')'.
        guard let close = bytes.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = bytes[(close + 1)...].split(separator: UInt8(ascii: " "))
        // fields[0] is field 3 (state), so utime (14) is fields[11], stime (15) fields[12].
        guard fields.count > 12, let utime = parseUInt(fields[11]), let stime = parseUInt(fields[12])
        else { return nil }
        let ticks = sysconf(Int32(_SC_CLK_TCK))
        guard ticks > 0 else { return nil }
        return Double(utime &+ stime) / Double(ticks)
    }

    /// Second field of /proc/self/statm (resident pages) × page size.
    static func residentBytes() -> Double? {
        guard let bytes = readSmallFile("/proc/self/statm") else { return nil }
        let fields = bytes.split(separator: UInt8(ascii: " "))
        guard fields.count > 1, let pages = parseUInt(fields[1]) else { return nil }
        let pageSize = sysconf(Int32(_SC_PAGESIZE))
        guard pageSize > 0 else { return nil }
        return Double(pages) * Double(pageSize)
    }

    /// Entries of /proc/self/fd, not counting "." and "..", nor the descriptor the listing
    /// itself holds open.
    static func openFDs() -> Double? {
        guard let dir = opendir("/proc/self/fd") else { return nil }
        defer { closedir(dir) }
        var count = 0
        while let entry = readdir(dir) {
            let isDot = withUnsafeBytes(of: entry.pointee.d_name) { raw -> Bool in
                guard raw.count >= 3 else { return false }
                return raw[0] == UInt8(ascii: ".")
                    && (raw[1] == 0 || (raw[1] == UInt8(ascii: ".") && raw[2] == 0))
            }
            if !isDot { count += 1 }
        }
        return Double(max(0, count - 1))
    }

    /// Reads a /proc file (they report size 0, so read until EOF) up to 64 KiB.
    static func readSmallFile(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while out.count < 65_536 {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                out.append(contentsOf: chunk[0..<n])
            } else if n == 0 {
                break
            } else if errno == EINTR {
                continue
            } else {
                return nil
            }
        }
        return out
    }

    /// Decimal digits → UInt64; nil on anything else or on overflow.
    static func parseUInt(_ s: ArraySlice<UInt8>) -> UInt64? {
        var v: UInt64 = 0
        var any = false
        for b in s {
            if b == 0x0A { break }
            guard b >= 0x30 && b <= 0x39 else { return nil }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(b - 0x30))
            if o1 || o2 { return nil }
            v = a
            any = true
        }
        return any ? v : nil
    }
}
