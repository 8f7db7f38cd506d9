import Testing
@testable import Config

@Suite("Durations")
struct DurationTests {
    @Test(arguments: [
        ("250ms", 250_000_000 as UInt64), ("5s", 5_000_000_000), ("1m", 60_000_000_000),
        ("1h", 3_600_000_000_000), ("1m30s", 90_000_000_000), ("1.5s", 1_500_000_000),
        ("0.25", 250_000_000), ("10", 10_000_000_000), (".5", 500_000_000), ("0", 0), ("0s", 0),
        ("100us", 100_000), ("7ns", 7), ("0.0000001", 100), ("1h0m1ms", 3_600_001_000_000),
        (" 5s ", 5_000_000_000), ("8760h", 31_536_000_000_000_000),
    ])
    func parsesValidDurations(_ text: String, _ nanos: UInt64) {
        #expect(ConfigDuration.parse(text) == nanos)
    }

    @Test(arguments: ["", "s", "-5s", "5x", "5 s", "1..5s", "1:30", "8761h", "99999999999999999999s",
                      "184467440737095516160ns", "5sec", "ms", "1e3s", "5s5"])
    func rejectsInvalidDurations(_ text: String) {
        #expect(ConfigDuration.parse(text) == nil)
    }

    @Test func bareNumbersFromYAMLAreSeconds() {
        #expect(ConfigDuration.fromSeconds(0.25) == 250_000_000)
        #expect(ConfigDuration.fromSeconds(10) == 10_000_000_000)
        #expect(ConfigDuration.fromSeconds(-1) == nil)
        #expect(ConfigDuration.fromSeconds(.infinity) == nil)
        #expect(ConfigDuration.fromSeconds(.nan) == nil)
        #expect(ConfigDuration.fromSeconds(1e300) == nil)
    }

    @Test func formatUsesTheLargestExactUnitAndRoundTrips() {
        #expect(ConfigDuration.format(0) == "0s")
        #expect(ConfigDuration.format(10_000_000_000) == "10s")
        #expect(ConfigDuration.format(90_000_000_000) == "90s")
        #expect(ConfigDuration.format(120_000_000_000) == "2m")
        #expect(ConfigDuration.format(3_600_000_000_000) == "1h")
        #expect(ConfigDuration.format(250_000_000) == "250ms")
        #expect(ConfigDuration.format(1_500) == "1500ns")
        for n: UInt64 in [1, 999, 1_000, 1_234_567, 59_999_999_999, ConfigDuration.maxNanos] {
            #expect(ConfigDuration.parse(ConfigDuration.format(n)) == n)
        }
    }
}

@Suite("ConfigNode")
struct ConfigNodeTests {
    @Test func scalarsFollowTheYAML12CoreSchema() throws {
        let c = try ConfigLoader.parse(text: """
        listeners: [{name: a, address: "127.0.0.1:1", upstream: "127.0.0.1:2"}]
        filters:
          - name: probe
            a: off
            b: yes
            c: true
            d: ~
            e: 0x1f
            f: 1_000
            g: "12"
            h: 1.5e3
            i: .inf
            j: 99999999999999999999
            k: !!str 42
            l:
        """, file: "f", environment: [:])
        let s = try #require(c.filters.first?.settings)
        #expect(s["a"]?.value == .string("off"))
        #expect(s["b"]?.value == .string("yes"))
        #expect(s["c"]?.value == .bool(true))
        #expect(s["d"]?.value == .null)
        #expect(s["e"]?.value == .int(31))
        #expect(s["f"]?.value == .string("1_000"))
        #expect(s["g"]?.value == .string("12"))
        #expect(s["h"]?.value == .double(1500))
        #expect(s["h"]?.doubleValue == 1500)
        #expect(s["i"]?.value == .double(.infinity))
        #expect(s["j"]?.value == .double(1e20))  // too big for Int: a float, as the core schema reads it
        #expect(s["k"]?.value == .string("42"))
        #expect(s["l"]?.isNull == true)
        #expect(s["e"]?.doubleValue == 31)
        #expect(s["missing"] == nil)
        #expect(s["e"]?.line == 8)
        #expect(s["e"]?.column == 8)
        #expect(s.line(ofKey: "l") == 15)
    }

    @Test func equalityComparesMapsInOrder() {
        let a = ConfigNode(value: .map([(key: "x", value: ConfigNode(value: .int(1)))]))
        let b = ConfigNode(value: .map([(key: "x", value: ConfigNode(value: .int(1)))]))
        let c = ConfigNode(value: .map([(key: "x", value: ConfigNode(value: .int(2)))]))
        #expect(a == b)
        #expect(a != c)
        #expect(a.keys == ["x"])
    }
}
