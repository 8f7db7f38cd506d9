#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import Telemetry

/// Runs `body` on a fresh OS thread and returns a joiner; real threads, not the task pool, so
/// the increments truly race.
private final class Box: @unchecked Sendable {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

private func spawn(_ body: @escaping @Sendable () -> Void) -> pthread_t? {
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var tid = pthread_t()
    let rc = pthread_create(&tid, nil, { arg in
        guard let arg else { return nil }
        let box = Unmanaged<Box>.fromOpaque(arg).takeRetainedValue()
        box.body()
        return nil
    }, box)
    if rc != 0 {
        Unmanaged<Box>.fromOpaque(box).release()
        return nil
    }
    return tid
}

@Suite struct MetricsRegistryTests {
    @Test func incrementsFromTwoThreadsOnDifferentShardsSumExactly() throws {
        let registry = MetricsRegistry()
        let counter = registry.counter("requests_total", help: "Requests.").labels()
        let histogram = registry.histogram("latency_seconds", help: "Latency.", buckets: [0.5]).labels()
        let gauge = registry.gauge("active", help: "Active.").labels()
        var threads: [pthread_t] = []
        for shard in 0..<2 {
            let tid = try #require(spawn {
                for _ in 0..<100_000 {
                    counter.increment(shard: shard)
                    histogram.observe(0.25, shard: shard)
                    gauge.add(shard == 0 ? 2 : -1, shard: shard)
                }
            })
            threads.append(tid)
        }
        for t in threads { pthread_join(t, nil) }
        #expect(counter.value == 200_000)
        #expect(histogram.count == 200_000)
        #expect(histogram.sum == 50_000)
        #expect(gauge.value == 100_000)
    }

    @Test func outOfRangeShardsShareTheSpareSlotWithoutLosingCounts() {
        let registry = MetricsRegistry()
        let counter = registry.counter("c_total", help: "C.").labels()
        counter.increment(shard: -1)
        counter.increment(shard: 16)
        counter.increment(shard: 1_000)
        counter.add(7, shard: 15)
        #expect(counter.value == 10)
    }

    @Test func sameLabelValuesGiveTheSameSeries() {
        let registry = MetricsRegistry()
        let family = registry.counter("http_requests_total", help: "Requests.", labelNames: ["code", "method"])
        let a = family.labels("200", "GET")
        let b = family.labels(["200", "GET"])
        let c = family.labels("500", "GET")
        #expect(a === b)
        #expect(a !== c)
        a.increment(shard: 0)
        b.increment(shard: 1)
        #expect(family.labels("200", "GET").value == 2)
        #expect(c.value == 0)
    }

    @Test func registeringTheSameNameTwiceReturnsTheExistingFamily() {
        let registry = MetricsRegistry()
        let first = registry.counter("reloads_total", help: "Reloads.", labelNames: ["result"])
        let again = registry.counter("reloads_total", help: "Reloads.", labelNames: ["result"])
        #expect(first === again)
        #expect(registry.conflicts.isEmpty)
        // Wrong type: no trap, a working but unexported family, and the conflict is recorded.
        let wrong = registry.gauge("reloads_total", help: "Oops.")
        wrong.labels().set(5)
        #expect(wrong.labels().value == 5)
        #expect(registry.conflicts == ["reloads_total"])
        #expect(!registry.render().contains("# TYPE reloads_total gauge"))
    }

    @Test func wrongLabelArityIsPaddedNotTrapped() {
        let registry = MetricsRegistry()
        let family = registry.counter("x_total", help: "X.", labelNames: ["a", "b"])
        family.labels("only").increment(shard: 0)
        family.labels("1", "2", "3").increment(shard: 0)
        #expect(family.labels("only", "").value == 1)
        #expect(family.labels("1", "2").value == 1)
    }

    @Test func gaugeSetReplacesWhatAddsAccumulated() {
        let registry = MetricsRegistry()
        let g = registry.gauge("queue_depth", help: "Depth.").labels()
        g.add(5, shard: 3)
        g.add(-2, shard: 7)
        #expect(g.value == 3)
        g.set(42)
        #expect(g.value == 42)
        g.set(-1)
        #expect(g.value == -1)
    }

    @Test func histogramPutsBoundaryValuesInTheirOwnBucketAndDropsNaN() {
        let registry = MetricsRegistry()
        let family = registry.histogram("h", help: "H.", buckets: [1, 0.1, 0.5, .infinity, 0.5])
        #expect(family.buckets == [0.1, 0.5, 1])
        let h = family.labels()
        h.observe(0.1, shard: 0)   // le="0.1" is inclusive
        h.observe(1, shard: 0)
        h.observe(5, shard: 0)     // +Inf only
        h.observe(.nan, shard: 0)  // dropped
        h.observe(-0.25, shard: 0) // negative values work in the fixed-point sum
        #expect(h.bucketCounts() == [2, 0, 1, 1])
        #expect(h.count == 4)
        #expect(h.sum == 5.85)
    }

    @Test func renderMatchesTheExpositionFormatExactly() {
        let registry = MetricsRegistry()
        let requests = registry.counter("outrider_requests_total", help: "Requests by code.\nSecond line \\ here.",
                                        labelNames: ["code", "route"])
        requests.labels("200", "/api").add(3, shard: 0)
        requests.labels("503", "say \"hi\"\\\nnow").increment(shard: 2)
        _ = registry.counter("outrider_unused_total", help: "Never labelled.", labelNames: ["x"])
        registry.gauge("outrider_connections", help: "Open connections.").labels().add(-2, shard: 5)
        let latency = registry.histogram("outrider_latency_seconds", help: "Latency.",
                                         labelNames: ["route"], buckets: [0.1, 0.5, 1])
        let api = latency.labels("/api")
        api.observe(0.05, shard: 0)
        api.observe(0.3, shard: 1)
        api.observe(2, shard: 16)
        registry.gaugeFunction("outrider_config_version", help: "Config version.",
                               labels: ["hash": "abc", "file": "a.yaml"]) { 7 }
        registry.counterFunction("outrider_cpu_total", help: "CPU.") { 1.25 }

        let expected = """
        # HELP outrider_requests_total Requests by code.\\nSecond line \\\\ here.
        # TYPE outrider_requests_total counter
        outrider_requests_total{code="200",route="/api"} 3
        outrider_requests_total{code="503",route="say \\"hi\\"\\\\\\nnow"} 1
        # HELP outrider_connections Open connections.
        # TYPE outrider_connections gauge
        outrider_connections -2
        # HELP outrider_latency_seconds Latency.
        # TYPE outrider_latency_seconds histogram
        outrider_latency_seconds_bucket{route="/api",le="0.1"} 1
        outrider_latency_seconds_bucket{route="/api",le="0.5"} 2
        outrider_latency_seconds_bucket{route="/api",le="1"} 2
        outrider_latency_seconds_bucket{route="/api",le="+Inf"} 3
        outrider_latency_seconds_sum{route="/api"} 2.35
        outrider_latency_seconds_count{route="/api"} 3
        # HELP outrider_config_version Config version.
        # TYPE outrider_config_version gauge
        outrider_config_version{file="a.yaml",hash="abc"} 7
        # HELP outrider_cpu_total CPU.
        # TYPE outrider_cpu_total counter
        outrider_cpu_total 1.25

        """
        #expect(registry.render() == expected)
    }

    @Test func reRegisteringAFunctionWithTheSameLabelsReplacesItsReader() {
        let registry = MetricsRegistry()
        registry.gaugeFunction("v", help: "V.", labels: ["k": "a"]) { 1 }
        registry.gaugeFunction("v", help: "V.", labels: ["k": "a"]) { 2 }
        registry.gaugeFunction("v", help: "V.", labels: ["k": "b"]) { .infinity }
        #expect(registry.render() == """
        # HELP v V.
        # TYPE v gauge
        v{k="a"} 2
        v{k="b"} +Inf

        """)
    }

    @Test func invalidNamesAreSanitizedIntoParseableOnes() {
        let registry = MetricsRegistry()
        registry.counter("9bad-name.total", help: "B.", labelNames: ["a-b"]).labels("x").increment(shard: 0)
        #expect(registry.render().contains("\n_bad_name_total{a_b=\"x\"} 1\n"))
    }
}

@Suite struct ProcessMetricsTests {
    private func value(of name: String, in text: String) -> Double? {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            if parts.count == 2, parts[0] == name { return Double(String(parts[1])) }
        }
        return nil
    }

    @Test func processMetricsRenderPlausibleValues() throws {
        let registry = MetricsRegistry()
        registerProcessMetrics(registry, version: "1.2.3")
        // Burn a little CPU so utime is not necessarily 0 (not asserted: nothing timed).
        var x: UInt64 = 0
        for i in 0..<1_000_000 { x = x &+ UInt64(i) &* 31 }
        #expect(x != 1)
        let text = registry.render()
        #expect(text.contains("# TYPE process_cpu_seconds_total counter\n"))
        #expect(text.contains("outrider_build_info{version=\"1.2.3\"} 1\n"))
        let rss = try #require(value(of: "process_resident_memory_bytes", in: text))
        #expect(rss > 0)
        let fds = try #require(value(of: "process_open_fds", in: text))
        #expect(fds >= 3) // stdin, stdout, stderr at least
        let cpu = try #require(value(of: "process_cpu_seconds_total", in: text))
        #expect(cpu >= 0)
        let start = try #require(value(of: "process_start_time_seconds", in: text))
        #expect(start > 1_600_000_000) // after 2020
        let uptime = try #require(value(of: "outrider_uptime_seconds", in: text))
        #expect(uptime >= 0)
        #expect(registry.conflicts.isEmpty)
    }
}
