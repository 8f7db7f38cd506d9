// swift-tools-version:6.0
import PackageDescription

// One concern per target; C stays behind one door per library (ARCHITECTURE.md).

/// The data-path targets drop dynamic exclusivity checks in release builds: profiles showed
/// swift::runtime::AccessSet on every request. Debug builds (and `swift test`) keep them, so
/// a violation is still caught by the test suites.
let hotPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
// The WAF engine also ends values' lifetimes at their last use instead of at the end of their
// scope, which lets the optimizer drop many retain/release pairs (about 11% of its reference
// counting, 3% of its instructions). Only here: the engine holds no unmanaged reference whose
// object only a local variable keeps alive (its raw pointers point into the rule set).
let enginePath: [SwiftSetting] = hotPath + [.unsafeFlags(["-Xfrontend", "-enable-lexical-lifetimes=false"], .when(configuration: .release))]
let package = Package(
    name: "Outrider",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "outrider", targets: ["Outrider"]),
    ],
    dependencies: [
        // YAML with line/column marks, for file:line config errors.
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
    ],
    targets: [
        // epoll, eventfd, timerfd, inotify, SO_ORIGINAL_DST: Glibc does not export them.
        .target(name: "CLinux"),
        // Bytes, heads, errors, clock. No I/O.
        .target(name: "OutriderCore", swiftSettings: hotPath),
        // The loop, selector, timers, syscall wrapper, cross-thread wake-ups.
        .target(name: "EventLoop", dependencies: ["CLinux", "OutriderCore"], swiftSettings: hotPath),
        // HTTP/1.1 codec as pure state machines.
        .target(name: "HTTP1", dependencies: ["OutriderCore"], swiftSettings: hotPath),
        // OpenSSL (libssl, libcrypto) behind one door: a module map and shims for macros.
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        // TLS over memory BIOs (never owns the socket): contexts, handshakes, ALPN, SNI, peer identity, XFCC.
        .target(name: "TLS", dependencies: ["COpenSSL", "OutriderCore"], swiftSettings: hotPath),
        // outrider.yaml schema, validation with file:line errors.
        .target(name: "Config", dependencies: ["CLinux", "OutriderCore", .product(name: "Yams", package: "Yams")]),
        // Metrics registry (and later spans, propagation, the OTLP exporter).
        .target(name: "Telemetry", dependencies: ["OutriderCore"], swiftSettings: hotPath),
        // The filter contract, the chain, one folder per filter.
        // libhiredis (async API driven by our loops) for the rate-limit filter's global mode.
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),
        .target(name: "Filters", dependencies: ["OutriderCore", "Telemetry", "Config", "EventLoop", "WAF", "CHiredis"], swiftSettings: hotPath),
        // PCRE2 (8-bit, JIT) behind one door, for the WAF's @rx.
        .systemLibrary(name: "CPCRE2", pkgConfig: "libpcre2-8"),
        // libinjection (SQLi/XSS), resolved at run time from Debian's libmodsecurity3.
        .target(name: "CInjection", linkerSettings: [.linkedLibrary("dl")]),
        // SecLang engine (ModSecurity rule language, OWASP CRS): pure, no sockets.
        .target(name: "WAF", dependencies: ["OutriderCore", "CPCRE2", "CInjection"], swiftSettings: enginePath),
        // In-process WAF engine benchmark (make waf-bench): µs per request, no sockets.
        .executableTarget(name: "WAFBench", dependencies: ["WAF"]),
        // libnghttp2 behind one door: only HTTP2 imports it.
        .systemLibrary(name: "CNghttp2", pkgConfig: "libnghttp2", providers: [.apt(["libnghttp2-dev"])]),
        // HTTP/2 server codec on nghttp2: a session fed bytes that returns events and output.
        .target(name: "HTTP2", dependencies: ["CNghttp2", "OutriderCore"], swiftSettings: hotPath),
        // Listeners, connections, upstream pool, the proxy stream, admin server.
        .target(name: "Proxy", dependencies: ["CLinux", "OutriderCore", "EventLoop", "HTTP1", "Config", "Telemetry", "Filters", "TLS", "HTTP2"], swiftSettings: hotPath),
        // CLI, wiring, signals, reload, drain.
        .executableTarget(name: "Outrider", dependencies: ["Proxy", "Config", "Telemetry", "Filters", "EventLoop", "OutriderCore", "CLinux"]),
        // The replay driver of the fuzz targets' plain builds.
        .target(name: "FuzzReplay"),
        // libFuzzer entry for the HTTP/1 parsers (make fuzz).
        .executableTarget(
            name: "HTTP1Fuzz", dependencies: ["HTTP1", "OutriderCore", "FuzzReplay"],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
        // libFuzzer entry for the WAF's body processors, request parsing and SecLang loader (make fuzz-waf).
        .executableTarget(
            name: "WAFFuzz", dependencies: ["WAF", "FuzzReplay"],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
        .testTarget(name: "HTTP1Tests", dependencies: ["HTTP1", "OutriderCore"]),
        .testTarget(name: "TLSTests", dependencies: ["TLS", "OutriderCore"]),
        .testTarget(name: "HTTP2Tests", dependencies: ["HTTP2", "OutriderCore"]),
        .testTarget(name: "ConfigTests", dependencies: ["Config", "OutriderCore"]),
        .testTarget(name: "FiltersTests", dependencies: ["Filters", "Config", "Telemetry", "OutriderCore", "EventLoop"]),
        .testTarget(name: "EventLoopTests", dependencies: ["EventLoop", "OutriderCore", "CLinux"]),
        .testTarget(name: "TelemetryTests", dependencies: ["Telemetry", "OutriderCore"]),
        .testTarget(name: "RateLimitFilterTests", dependencies: ["Filters", "Config", "OutriderCore", "Telemetry", "EventLoop"]),
        .testTarget(name: "WAFTests", dependencies: ["WAF", "OutriderCore"]),
        .testTarget(name: "MTLSFilterTests", dependencies: ["Filters", "Config", "OutriderCore", "Telemetry", "EventLoop"]),
    ],
    swiftLanguageModes: [.v6]
)
