import Testing
import OutriderCore
@testable import Config

/// Parses `yaml` and returns its diagnostics, or records an issue if it loaded.
func diagnostics(_ yaml: String, env: [String: String] = [:], sourceLocation: SourceLocation = #_sourceLocation) -> [ConfigDiagnostic] {
    do {
        let config = try ConfigLoader.parse(text: yaml, file: "outrider.yaml", environment: env)
        Issue.record("expected errors, got \(config)", sourceLocation: sourceLocation)
        return []
    } catch {
        return error.diagnostics
    }
}

func lines(_ yaml: String, env: [String: String] = [:]) -> [String] {
    diagnostics(yaml, env: env).map(\.description)
}

let minimalYAML = """
workers: 1
admin:
  address: 127.0.0.1:15000
listeners:
  - name: inbound
    address: 127.0.0.1:15006
    upstream: 127.0.0.1:8080
"""

@Suite("Loading valid configs")
struct ValidConfigTests {
    @Test func minimalContractConfigLoadsWithDefaults() throws {
        let c = try ConfigLoader.parse(text: minimalYAML, file: "outrider.yaml", environment: [:])
        #expect(c.workers == 1)
        #expect(c.logLevel == .info)
        #expect(c.admin.address == SocketAddressSpec(host: "127.0.0.1", port: 15000))
        #expect(c.listeners == [ListenerConfig(
            name: "inbound",
            address: SocketAddressSpec(host: "127.0.0.1", port: 15006),
            upstream: SocketAddressSpec(host: "127.0.0.1", port: 8080),
            line: 5)])
        #expect(c.timeouts == Timeouts.defaults)
        #expect(c.timeouts.headerRead == 10_000_000_000)
        #expect(c.timeouts.request == 0)
        #expect(c.limits == Limits.defaults)
        #expect(c.limits.maxRequestHeaderBytes == 61_440)
        #expect(c.accessLog == .stdout)
        #expect(c.filters.isEmpty)
    }

    @Test func onlyListenersIsEnough() throws {
        let c = try ConfigLoader.parse(text: """
        listeners:
          - {name: a, address: ":15006", upstream: "localhost:8080"}
        """, file: "x.yaml", environment: [:])
        #expect(c.workers == 0)
        #expect(c.admin.address.description == "127.0.0.1:15000")
        #expect(c.listeners.first?.address == SocketAddressSpec(host: "0.0.0.0", port: 15006))
        #expect(c.listeners.first?.upstream == SocketAddressSpec(host: "127.0.0.1", port: 8080))
    }

    @Test func fullConfigSetsEveryField() throws {
        let c = try ConfigLoader.parse(text: """
        workers: 4
        log_level: debug
        admin:
          address: "[::1]:9901"
        listeners:
          - name: inbound
            address: 127.0.0.1:15006
            upstream: 127.0.0.1:8080
          - name: outbound_2
            address: 127.0.0.1:15001
            upstream: "[::1]:9000"
        timeouts:
          header_read: 250ms
          idle: 2m
          request: 1h
          upstream_connect: 1.5
          upstream_response: 7
          upstream_idle: 1m30s
          drain: 0
        limits:
          max_request_header_bytes: 8192
          max_request_headers: 50
          max_uri_length: 2048
          max_connections: 100
          upstream_max_idle: 0
        access_log:
          path: /var/log/outrider/access.log
        filters:
          - name: ratelimit
            mode: shadow
            rules: filters/ratelimit/default.yaml
            burst: 10
          - name: tracing
            sample_ratio: 0.25
            enabled: true
            headers: [b3, w3c]
          - name: waf
            mode: off
        """, file: "full.yaml", environment: [:])
        #expect(c.workers == 4)
        #expect(c.logLevel == .debug)
        #expect(c.admin.address == SocketAddressSpec(host: "::1", port: 9901))
        #expect(c.listeners.map(\.name) == ["inbound", "outbound_2"])
        #expect(c.listeners.map(\.line) == [6, 9])
        #expect(c.listeners[1].upstream.description == "[::1]:9000")
        #expect(c.timeouts == Timeouts(
            headerRead: 250_000_000, idle: 120_000_000_000, request: 3_600_000_000_000,
            upstreamConnect: 1_500_000_000, upstreamResponse: 7_000_000_000,
            upstreamIdle: 90_000_000_000, drain: 0))
        #expect(c.limits == Limits(maxRequestHeaderBytes: 8192, maxRequestHeaders: 50, maxURILength: 2048,
                                   maxConnections: 100, upstreamMaxIdle: 0))
        #expect(c.accessLog == .file("/var/log/outrider/access.log"))
        #expect(c.filters.map(\.name) == ["ratelimit", "tracing", "waf"])
        #expect(c.filters.map(\.mode) == [.shadow, .enforce, .off])
        #expect(c.filters.map(\.line) == [29, 33, 37])
        #expect(c.filters.allSatisfy { $0.file == "full.yaml" })
        let rl = c.filters[0].settings
        #expect(rl["rules"]?.stringValue == "filters/ratelimit/default.yaml")
        #expect(rl["rules"]?.line == 31)
        #expect(rl["burst"]?.intValue == 10)
        #expect(rl["name"]?.stringValue == "ratelimit")
        #expect(rl.keys == ["name", "mode", "rules", "burst"])
        let tr = c.filters[1].settings
        #expect(tr["sample_ratio"]?.doubleValue == 0.25)
        #expect(tr["enabled"]?.boolValue == true)
        #expect(tr["headers"]?.listValue?.compactMap(\.stringValue) == ["b3", "w3c"])
        #expect(tr.line(ofKey: "headers") == 36)
    }

    @Test func accessLogOffAndFilterModeOffAreStringsNotBooleans() throws {
        let c = try ConfigLoader.parse(text: minimalYAML + """

        access_log:
          path: off
        filters:
          - name: waf
            mode: off
        """, file: "outrider.yaml", environment: [:])
        #expect(c.accessLog == .off)
        #expect(c.filters.first?.mode == .off)
    }

    @Test func emptySectionsKeepDefaults() throws {
        let c = try ConfigLoader.parse(text: minimalYAML + "\ntimeouts:\nlimits:\nfilters:\n", file: "f", environment: [:])
        #expect(c.timeouts == .defaults)
        #expect(c.limits == .defaults)
        #expect(c.filters.isEmpty)
    }

    @Test func shippedOutriderYAMLLoads() throws {
        let root = packageRoot()
        let loaded = try ConfigLoader.load(path: root + "/outrider.yaml", environment: [:])
        #expect(loaded.config.workers == 1)
        #expect(loaded.config.admin.address.description == "127.0.0.1:15000")
        #expect(loaded.config.listeners.map(\.name) == ["inbound"])
        #expect(loaded.config.listeners.first?.address.description == "127.0.0.1:15006")
        #expect(loaded.config.listeners.first?.upstream.description == "127.0.0.1:8080")
        #expect(loaded.config.filters.isEmpty)
        #expect(loaded.sha256.count == 64)
    }

    @Test func documentedExampleLoadsWithExactlyTheDefaults() throws {
        let loaded = try ConfigLoader.load(path: packageRoot() + "/deploy/outrider.example.yaml", environment: [:])
        var expected = OutriderConfig()
        expected.listeners = [ListenerConfig(
            name: "inbound",
            address: SocketAddressSpec(host: "127.0.0.1", port: 15006),
            upstream: SocketAddressSpec(host: "127.0.0.1", port: 8080),
            line: loaded.config.listeners.first?.line ?? -1)]
        #expect(loaded.config == expected)
    }
}

/// The package root, from this file's path (Tests/ConfigTests/<file>).
func packageRoot(_ file: String = #filePath) -> String {
    var parts = file.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)
    return parts.joined(separator: "/")
}

@Suite("Reporting errors with file:line")
struct ConfigErrorTests {
    @Test func unknownKeyInListenerSuggestsTheNearestKey() {
        #expect(lines("""
        workers: 1
        admin:
          address: 127.0.0.1:15000
        listeners:
          - name: inbound
            upstream: 127.0.0.1:8080
            adress: 127.0.0.1:15006
        """) == [
            "outrider.yaml:5: listener 'inbound': missing required key 'address'",
            "outrider.yaml:7: unknown key 'adress' in listener (did you mean 'address'?)",
        ])
    }

    @Test func unknownKeysAtEveryLevel() {
        #expect(lines(minimalYAML + """

        worker: 2
        timeouts:
          idel: 5s
        limits:
          bogus_limit: 1
        access_log:
          file: /tmp/x
        admin_port: 1
        """) == [
            "outrider.yaml:8: unknown key 'worker' at top level (did you mean 'workers'?)",
            "outrider.yaml:10: unknown key 'idel' in timeouts (did you mean 'idle'?)",
            "outrider.yaml:12: unknown key 'bogus_limit' in limits",
            "outrider.yaml:14: unknown key 'file' in access_log",
            "outrider.yaml:15: unknown key 'admin_port' at top level",
        ])
    }

    @Test func workersOutOfRange() {
        #expect(lines("""
        # comment
        log_level: info
        workers: 300
        listeners:
          - name: inbound
            address: 127.0.0.1:15006
            upstream: 127.0.0.1:8080
        """) == ["outrider.yaml:3: workers must be an integer between 0 and 256 (got 300)"])
    }

    @Test func workersOfTheWrongType() {
        #expect(lines("workers: two\n" + minimalYAML.dropFirstLine()) ==
            ["outrider.yaml:1: workers must be an integer between 0 and 256 (got 'two')"])
        #expect(lines("workers: 1.5\n" + minimalYAML.dropFirstLine()) ==
            ["outrider.yaml:1: workers must be an integer between 0 and 256 (got 1.5)"])
        #expect(lines("workers: \"1\"\n" + minimalYAML.dropFirstLine()) ==
            ["outrider.yaml:1: workers must be an integer between 0 and 256 (got '1')"])
    }

    @Test func listenerAddressThatIsNotHostPort() {
        #expect(lines("""
        workers: 1
        admin:
          address: 127.0.0.1:15000
        listeners:
          - name: inbound
            upstream: 127.0.0.1:8080
            # the port is out of range
            #
            address: 127.0.0.1:99999
        """) == ["outrider.yaml:9: listener 'inbound': address '127.0.0.1:99999' is not host:port (an IP address or localhost, and a port 1-65535)"])
    }

    @Test(arguments: ["127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "example.com:80", "1.2.3:80", "::1:80",
                      "127.0.0.1:+80", " 127.0.0.1:80", "[::1]:65536", "[zz]:80"])
    func badAddressesAreRejected(_ address: String) {
        let d = diagnostics("""
        listeners:
          - name: a
            address: "\(address)"
            upstream: 127.0.0.1:8080
        """)
        #expect(d.count == 1)
        #expect(d.first?.line == 3)
        #expect(d.first?.message.hasPrefix("listener 'a': address ") == true)
    }

    @Test func duplicateListenerNamesAndAddresses() {
        #expect(lines("""
        listeners:
          - name: a
            address: 127.0.0.1:15006
            upstream: 127.0.0.1:8080
          - name: a
            address: 127.0.0.1:15007
            upstream: 127.0.0.1:8080
          - name: b
            address: 127.0.0.1:15006
            upstream: 127.0.0.1:8080
          - name: c
            address: 0.0.0.0:15007
            upstream: 127.0.0.1:8080
        """) == [
            "outrider.yaml:5: listener name 'a' is already used at line 2",
            "outrider.yaml:8: listener 'b': address 127.0.0.1:15006 is already used by listener 'a' (line 2)",
            "outrider.yaml:11: listener 'c': address 0.0.0.0:15007 is already used by listener 'a' (line 5)",
        ])
    }

    @Test func listenerAddressEqualToAdminAddress() {
        #expect(lines("""
        admin:
          address: 127.0.0.1:15000
        listeners:
          - name: inbound
            address: 127.0.0.1:15000
            upstream: 127.0.0.1:8080
        """) == ["outrider.yaml:4: listener 'inbound': address 127.0.0.1:15000 collides with the admin address 127.0.0.1:15000"])
    }

    @Test func listenerUpstreamEqualToItsOwnAddressWouldLoop() {
        #expect(lines("""
        listeners:
          - name: loop
            address: 127.0.0.1:15006
            upstream: 127.0.0.1:15006
        """) == ["outrider.yaml:4: listener 'loop': upstream 127.0.0.1:15006 is the listener's own address (requests would loop)"])
    }

    @Test func missingRequiredKeysAreReportedAtTheParentMap() {
        #expect(lines("""
        workers: 1

        listeners:
          - address: 127.0.0.1:15006
          - name: Bad Name
            address: 127.0.0.1:15007
            upstream: 127.0.0.1:8080
        """) == [
            "outrider.yaml:4: listener #1: missing required key 'name'",
            "outrider.yaml:4: listener #1: missing required key 'upstream'",
            "outrider.yaml:5: listener #2: name must match [a-z0-9_-]+ (at most 63 characters), got 'Bad Name'",
        ])
        #expect(lines("""
        # no listeners

        workers: 1
        log_level: warn
        """) == ["outrider.yaml:3: missing required key 'listeners'"])
    }

    @Test func wrongTypesForSections() {
        #expect(lines("""
        listeners: inbound
        admin: 127.0.0.1:15000
        timeouts: [1, 2]
        limits:
          max_connections: lots
        filters: {name: waf}
        """) == [
            "outrider.yaml:1: listeners must be a list, not a string",
            "outrider.yaml:2: admin must be a map, not a string",
            "outrider.yaml:3: timeouts must be a map, not a list",
            "outrider.yaml:5: limits.max_connections must be an integer between 1 and 1000000 (got 'lots')",
            "outrider.yaml:6: filters must be a list, not a map",
        ])
        #expect(lines("listeners: []\n") == ["outrider.yaml:1: listeners must list at least one listener"])
        #expect(lines("listeners:\n  - inbound\n") ==
            ["outrider.yaml:2: listener #1 must be a map with name, address and upstream, not a string"])
    }

    @Test func badDurations() {
        #expect(lines(minimalYAML + """

        timeouts:
          header_read: 10x
          idle: -5s
          request: 1:30
          upstream_connect: 0
          upstream_idle: 0s
          drain: 9000h
          upstream_response: true
        """) == [
            "outrider.yaml:9: timeouts.header_read: '10x' is not a duration (use e.g. 250ms, 5s, 1m, 1h or a number of seconds; at most 8760h)",
            "outrider.yaml:10: timeouts.idle: '-5s' is not a duration (use e.g. 250ms, 5s, 1m, 1h or a number of seconds; at most 8760h)",
            "outrider.yaml:11: timeouts.request: '1:30' is not a duration (use e.g. 250ms, 5s, 1m, 1h or a number of seconds; at most 8760h)",
            "outrider.yaml:12: timeouts.upstream_connect must be greater than 0",
            "outrider.yaml:13: timeouts.upstream_idle must be greater than 0",
            "outrider.yaml:14: timeouts.drain: '9000h' is not a duration (use e.g. 250ms, 5s, 1m, 1h or a number of seconds; at most 8760h)",
            "outrider.yaml:15: timeouts.upstream_response: true is not a duration (use e.g. 250ms, 5s, 1m, 1h or a number of seconds; at most 8760h)",
        ])
    }

    @Test func unknownFilterModeAndMissingFilterName() {
        #expect(lines(minimalYAML + """

        filters:
          - name: waf
            mode: block
          - mode: shadow
            rules: x
          - name: ratelimit
            mode: false
          - just-a-string
        """) == [
            "outrider.yaml:10: filter 'waf': unknown filter mode 'block' (use enforce, shadow or off)",
            "outrider.yaml:11: filter #2: missing required key 'name'",
            "outrider.yaml:14: filter 'ratelimit': unknown filter mode false (use enforce, shadow or off)",
            "outrider.yaml:15: filter #4 must be a map with at least 'name', not a string",
        ])
    }

    @Test func unknownKeysInsideFilterEntriesBelongToTheFilter() throws {
        let c = try ConfigLoader.parse(text: minimalYAML + "\nfilters:\n  - name: waf\n    anything: [1, {deep: true}]\n",
                                       file: "f", environment: [:])
        #expect(c.filters.first?.settings["anything"]?.listValue?.count == 2)
    }

    @Test func logLevelAndAccessLogValues() {
        #expect(lines(minimalYAML + "\nlog_level: verbose\naccess_log:\n  path: \"\"\n") == [
            "outrider.yaml:8: log_level must be one of debug, info, warn, error (got 'verbose')",
            "outrider.yaml:10: access_log.path must be 'stdout', 'off' or a file path (got '')",
        ])
    }

    @Test func yamlSyntaxErrorHasItsLine() {
        let d = diagnostics("""
        workers: 1
        listeners:
          - name: inbound
            address: [127.0.0.1:15006
            upstream: 127.0.0.1:8080
        admin: {
        """)
        #expect(d.count == 1)
        #expect(d.first?.message.hasPrefix("YAML syntax error: ") == true)
        #expect((4...7).contains(d.first?.line ?? 0))

        let tab = diagnostics("workers: 1\nlisteners:\n\t- name: x\n")
        #expect(tab.first?.line == 3)
        #expect(tab.first?.description.hasPrefix("outrider.yaml:3: YAML syntax error") == true)
    }

    @Test func duplicateKeysAreAnError() {
        let d = diagnostics("workers: 1\nworkers: 2\n" + minimalYAML.dropFirstLine())
        #expect(d.count == 1)
        #expect(d.first?.message == "duplicate key 'workers' in the same map")
        #expect((1...2).contains(d.first?.line ?? 0))
    }

    @Test func emptyFileAndNonMapTopLevel() {
        #expect(lines("") == ["outrider.yaml:1: config is empty; it needs at least a 'listeners' list"])
        #expect(lines("# only a comment\n\n") == ["outrider.yaml:1: config is empty; it needs at least a 'listeners' list"])
        #expect(lines("\n- a\n- b\n") == ["outrider.yaml:2: the top level must be a map of keys (workers, admin, listeners, …), not a list"])
        #expect(lines("just text") == ["outrider.yaml:1: the top level must be a map of keys (workers, admin, listeners, …), not a string"])
    }

    @Test func multipleErrorsAreAllCollectedInFileOrder() {
        let d = diagnostics("""
        workers: -1
        log_level: loud
        admin:
          address: nowhere
        listeners:
          - name: inbound
            adress: 127.0.0.1:15006
            upstream: 127.0.0.1:8080
        timeouts:
          idle: soon
        limits:
          max_uri_length: 1
        filters:
          - name: waf
            mode: maybe
        """)
        #expect(d.map(\.line) == [1, 2, 4, 6, 7, 10, 12, 15])
        #expect(ConfigErrors(d).description.split(separator: "\n").count == 8)
        #expect(ConfigErrors(d).description.hasPrefix("outrider.yaml:1: workers must be an integer between 0 and 256"))
    }

    @Test func aliasBombIsBounded() {
        var yaml = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for i in 1...8 {
            yaml += "a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ") + "]\n"
        }
        yaml += "listeners: []\n"
        let d = diagnostics(yaml)
        #expect(d.count == 1)
        #expect(d.first?.message.contains("more than 100000 nodes") == true)
    }

    @Test func unreadableFileIsReported() {
        do {
            _ = try ConfigLoader.load(path: "/nonexistent/outrider.yaml", environment: [:])
            Issue.record("expected an error")
        } catch {
            #expect(error.description == "/nonexistent/outrider.yaml:0: cannot open config: No such file or directory")
        }
    }
}

@Suite("Environment overrides")
struct EnvironmentTests {
    @Test func overridesApplyAfterTheFile() throws {
        let c = try ConfigLoader.parse(text: minimalYAML, file: "outrider.yaml", environment: [
            "OUTRIDER_WORKERS": "8",
            "OUTRIDER_LOG_LEVEL": "DEBUG",
            "OUTRIDER_ADMIN_ADDRESS": "127.0.0.1:9901",
            "UNRELATED": "x",
        ])
        #expect(c.workers == 8)
        #expect(c.logLevel == .debug)
        #expect(c.admin.address.description == "127.0.0.1:9901")
    }

    @Test func emptyValuesCountAsUnset() throws {
        let c = try ConfigLoader.parse(text: minimalYAML, file: "outrider.yaml", environment: [
            "OUTRIDER_WORKERS": "", "OUTRIDER_LOG_LEVEL": "", "OUTRIDER_ADMIN_ADDRESS": "",
        ])
        #expect(c.workers == 1)
    }

    @Test func badValuesNameTheVariable() {
        #expect(lines(minimalYAML, env: [
            "OUTRIDER_WORKERS": "many",
            "OUTRIDER_LOG_LEVEL": "trace",
            "OUTRIDER_ADMIN_ADDRESS": "localhost",
        ]) == [
            "env:0: OUTRIDER_WORKERS must be an integer between 0 and 256 (got 'many')",
            "env:0: OUTRIDER_LOG_LEVEL must be one of debug, info, warn, error (got 'trace')",
            "env:0: OUTRIDER_ADMIN_ADDRESS 'localhost' is not host:port (an IP address or localhost, and a port 1-65535)",
        ])
        #expect(lines(minimalYAML, env: ["OUTRIDER_WORKERS": "99999999999999999999999"]) ==
            ["env:0: OUTRIDER_WORKERS must be an integer between 0 and 256 (got '99999999999999999999999')"])
    }

    @Test func adminAddressFromEnvironmentIsCheckedAgainstListeners() {
        #expect(lines(minimalYAML, env: ["OUTRIDER_ADMIN_ADDRESS": "0.0.0.0:15006"]) ==
            ["outrider.yaml:5: listener 'inbound': address 127.0.0.1:15006 collides with the admin address 0.0.0.0:15006"])
    }
}

extension String {
    func dropFirstLine() -> String {
        guard let nl = firstIndex(of: "\n") else { return "" }
        return String(self[index(after: nl)...])
    }
}
