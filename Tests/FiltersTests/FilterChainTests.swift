import Testing
import Synchronization
@testable import Filters
import Config
import EventLoop
import OutriderCore
import Telemetry

/// A filter with scripted verdicts, recording the phases it saw.
final class ScriptedFilter: HTTPFilter {
    enum Failure: Error { case boom }
    var headVerdict: FilterVerdict = .proceed
    var throwsInHead = false
    var bufferLimit = 0
    var seen: [String] = []
    func requestHead(_ head: inout RequestHead, context: StreamContext) throws -> FilterVerdict {
        seen.append("head")
        if throwsInHead { throw Failure.boom }
        head.headers.add(name: "x-seen-by", value: "scripted")
        return headVerdict
    }
    func requestBodyBufferLimit(context: StreamContext) -> Int { bufferLimit }
    func streamComplete(_ outcome: StreamOutcome, context: StreamContext) { seen.append("complete \(outcome.status)") }
}

final class ScriptedFactory: FilterFactory, @unchecked Sendable {   // tests only: one thread
    let name: String
    let mode: FilterMode
    let filter: ScriptedFilter
    init(_ name: String, _ mode: FilterMode, _ filter: ScriptedFilter) { self.name = name; self.mode = mode; self.filter = filter }
    func makeFilter(context: StreamContext) -> (any HTTPFilter)? { filter }
}

func makeContext() throws -> StreamContext {
    let loop = try EventLoop(index: 0)
    return StreamContext(requestID: "req-1", clientAddress: "127.0.0.1", clientPort: 40000, listenerName: "inbound",
                         serverAddress: SocketAddressSpec(host: "127.0.0.1", port: 15006),
                         upstreamAddress: SocketAddressSpec(host: "127.0.0.1", port: 8080), scheme: "http",
                         shard: 0, startWallNanos: 1_000, worker: WorkerServices(loop: loop, shard: 0, random: FastRandom()))
}

func request() -> RequestHead {
    RequestHead(method: "GET", target: "/a?b=1", version: .http11, headers: HTTPHeaders([("Host", "example"), ("User-Agent", "t")]))
}

@Suite struct FilterChainTests {
    @Test func enforcedReplyStopsTheChainAndIsCounted() throws {
        let registry = MetricsRegistry()
        let first = ScriptedFilter(); first.headVerdict = .respond(LocalReply(status: 429, details: "rate_limited"))
        let second = ScriptedFilter()
        let chain = FilterChain(factories: [ScriptedFactory("first", .enforce, first), ScriptedFactory("second", .enforce, second)], metrics: registry)
        let instance = try #require(chain.makeInstance(context: try makeContext()))
        var head = request()
        guard case .respond(let reply) = instance.requestHead(&head) else { Issue.record("expected a reply"); return }
        #expect(reply.status == 429)
        #expect(second.seen.isEmpty)
        #expect(registry.render().contains("outrider_filter_local_replies_total{filter=\"first\",status=\"429\"} 1"))
    }

    @Test func shadowReplyIsCountedButTheRequestProceeds() throws {
        let registry = MetricsRegistry()
        let shadow = ScriptedFilter(); shadow.headVerdict = .respond(LocalReply(status: 403, details: "waf_blocked"))
        let after = ScriptedFilter()
        let chain = FilterChain(factories: [ScriptedFactory("waf", .shadow, shadow), ScriptedFactory("after", .enforce, after)], metrics: registry)
        let instance = try #require(chain.makeInstance(context: try makeContext()))
        var head = request()
        guard case .proceed = instance.requestHead(&head) else { Issue.record("shadow mode must not answer"); return }
        #expect(after.seen == ["head"])
        #expect(registry.render().contains("outrider_filter_shadow_would_respond_total{filter=\"waf\",status=\"403\"} 1"))
    }

    @Test func throwingFilterFailsTheRequestWith500NotTheProcess() throws {
        let registry = MetricsRegistry()
        let broken = ScriptedFilter(); broken.throwsInHead = true
        let chain = FilterChain(factories: [ScriptedFactory("broken", .enforce, broken)], metrics: registry)
        let instance = try #require(chain.makeInstance(context: try makeContext()))
        var head = request()
        guard case .respond(let reply) = instance.requestHead(&head) else { Issue.record("expected 500"); return }
        #expect(reply.status == 500)
        #expect(reply.details == "filter_failed_broken")
        #expect(registry.render().contains("outrider_filter_failures_total{filter=\"broken\"} 1"))
    }

    @Test func pauseReportsWhereToResume() throws {
        let a = ScriptedFilter(), b = ScriptedFilter(), c = ScriptedFilter()
        b.headVerdict = .pause
        let chain = FilterChain(factories: [ScriptedFactory("a", .enforce, a), ScriptedFactory("b", .enforce, b), ScriptedFactory("c", .enforce, c)], metrics: MetricsRegistry())
        let instance = try #require(chain.makeInstance(context: try makeContext()))
        var head = request()
        guard case .paused(let index) = instance.requestHead(&head) else { Issue.record("expected pause"); return }
        #expect(index == 1)
        #expect(c.seen.isEmpty)
        guard case .proceed = instance.requestHead(&head, from: index + 1) else { Issue.record("expected proceed"); return }
        #expect(c.seen == ["head"])
    }

    @Test func filtersInModeOffAreLeftOutAndBufferLimitIsTheLargest() throws {
        let off = ScriptedFilter(); off.bufferLimit = 1_000_000
        let small = ScriptedFilter(); small.bufferLimit = 10
        let large = ScriptedFilter(); large.bufferLimit = 4096
        let chain = FilterChain(factories: [ScriptedFactory("off", .off, off), ScriptedFactory("s", .enforce, small), ScriptedFactory("l", .shadow, large)], metrics: MetricsRegistry())
        #expect(chain.factories.count == 2)
        let instance = try #require(chain.makeInstance(context: try makeContext()))
        #expect(instance.requestBodyBufferLimit() == 4096)
    }

    @Test func unknownFilterNamesAreReportedWithTheirLine() {
        let entry = FilterEntry(name: "nope", mode: .enforce, settings: ConfigNode(value: .map([]), file: "outrider.yaml", line: 12, column: 5), file: "outrider.yaml", line: 12)
        let errors = FilterRegistry.validate([entry], environment: [:])
        #expect(errors.count == 1)
        #expect(errors.first?.description.hasPrefix("outrider.yaml:12: unknown filter 'nope'") == true)
    }
}

@Suite struct AuditJSONTests {
    @Test func numbersAreWrittenAsDecimalText() {
        for n in [0, 7, 10, 949110, -1, -949110, Int.max, Int.min] {
            var out: [UInt8] = []
            JSONText.number(n, to: &out)
            #expect(String(decoding: out, as: UTF8.self) == String(n))
        }
        var out: [UInt8] = []
        JSONText.number(UInt64.max, to: &out)
        #expect(String(decoding: out, as: UTF8.self) == String(UInt64.max))
    }
}
