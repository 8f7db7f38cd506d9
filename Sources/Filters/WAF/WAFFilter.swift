import Config
import OutriderCore
import Telemetry
import WAF

/// The WAF's per-config-version state: the compiled rule set, the audit sink, counters.
final class WAFFactory: FilterFactory {
    let name = "waf"
    let mode: FilterMode
    let ruleSet: WAF.RuleSet
    let audit: AuditSink
    let metrics: WAFMetrics

    init(mode: FilterMode, ruleSet: WAF.RuleSet, audit: AuditSink, metrics: WAFMetrics) {
        self.mode = mode; self.ruleSet = ruleSet; self.audit = audit; self.metrics = metrics
    }

    func makeFilter(context: StreamContext) -> (any HTTPFilter)? {
        ruleSet.settings.ruleEngine == .off ? nil : WAFFilter(factory: self)
    }
}

/// One request through the SecLang engine: phase 1 on the head, phase 2 once the body is
/// held (or at once without a body), 3/4 on the response, 5 at the end. Every logged match
/// becomes one JSON audit line with ModSecurity's text, a span event and a counter.
final class WAFFilter: HTTPFilter {
    private let factory: WAFFactory
    private var tx: Transaction?
    private var uri = ""
    private var method = ""
    private var written = 0
    private var bodyExpected = false
    private var phase2Done = false
    private var responseBodyWanted = false
    private var outcomeCounted = false

    init(factory: WAFFactory) { self.factory = factory }

    func requestHead(_ head: inout RequestHead, context: StreamContext) throws -> FilterVerdict {
        let t = Transaction(ruleSet: factory.ruleSet, requestID: context.requestID, clientAddress: context.clientAddress,
                            clientPort: Int(context.clientPort), serverAddress: context.serverAddress.host,
                            serverPort: Int(context.serverAddress.port), startNanos: context.startWallNanos)
        if factory.mode == .shadow { t.setShadow() }
        tx = t
        uri = head.target
        method = head.method
        var headers: [(String, String)] = []
        headers.reserveCapacity(head.headers.count)
        for f in head.headers { headers.append((f.name, f.value)) }
        let te = head.headers.first("transfer-encoding")
        let cl = head.headers.first("content-length").flatMap { Int($0.wafTrim()) } ?? 0
        bodyExpected = te != nil || cl > 0
        if let i = t.processRequestHeaders(method: head.method, target: head.target, protocol: head.version.description, headers: headers) {
            return verdict(i, context)
        }
        if !bodyExpected {
            phase2Done = true
            let i = t.processRequestBody()
            flush(context)
            if let i { return verdict(i, context) }
        }
        flush(context)
        return .proceed
    }

    func requestBodyBufferLimit(context: StreamContext) -> Int {
        guard let t = tx, bodyExpected, !phase2Done, t.requestBodyAccess else { return 0 }
        return max(1, t.requestBodyLimit)
    }

    func requestBody(_ chunk: UnsafeRawBufferPointer, endStream: Bool, context: StreamContext) throws -> FilterVerdict {
        guard let t = tx, !phase2Done else { return .proceed }
        if chunk.count > 0 { t.appendRequestBody(chunk) }
        guard endStream else { return .proceed }
        phase2Done = true
        let i = t.processRequestBody()
        flush(context)
        if let i { return verdict(i, context) }
        return .proceed
    }

    func requestBodyOverLimit(context: StreamContext) -> FilterVerdict {
        guard let t = tx, !phase2Done else { return .proceed }
        phase2Done = true
        factory.metrics.bodyOverLimit.increment(shard: context.shard)
        if let i = t.bodyLimitIntervention {
            var reply = LocalReply(status: i.status, details: "waf_body_too_large")
            reply.responseFlags = "WAF"
            return .respond(reply)
        }
        let i = t.processRequestBody()
        flush(context)
        if let i { return verdict(i, context) }
        return .proceed
    }

    func responseHead(_ head: inout ResponseHead, context: StreamContext) throws -> FilterVerdict {
        guard let t = tx, t.intervention == nil else { return .proceed }
        if !phase2Done { phase2Done = true; _ = t.processRequestBody() }
        var headers: [(String, String)] = []
        for f in head.headers { headers.append((f.name, f.value)) }
        let i = t.processResponseHeaders(status: head.status, protocol: head.version.description, headers: headers)
        flush(context)
        if let i { return verdict(i, context) }
        responseBodyWanted = t.wantsResponseBody
        return .proceed
    }

    func responseBody(_ chunk: UnsafeRawBufferPointer, endStream: Bool, context: StreamContext) {
        guard responseBodyWanted, let t = tx else { return }
        if chunk.count > 0 { t.appendResponseBody(chunk) }
        if endStream {
            responseBodyWanted = false
            _ = t.processResponseBody()   // observe only: the body is already on its way
            flush(context)
        }
    }

    func streamComplete(_ outcome: StreamOutcome, context: StreamContext) {
        guard let t = tx else { return }
        t.processLogging()
        flush(context)
        if !outcomeCounted {
            outcomeCounted = true
            let wouldBlock = t.matches.contains { m in m.id == 949110 || m.id == 959100 } || t.intervention != nil
            (wouldBlock ? factory.metrics.detected : factory.metrics.passed).increment(shard: context.shard)
        }
        tx = nil
    }

    // MARK: output

    private func verdict(_ i: Intervention, _ context: StreamContext) -> FilterVerdict {
        flush(context)
        outcomeCounted = true
        if factory.mode == .shadow {
            factory.metrics.detected.increment(shard: context.shard)
            return .proceed
        }
        factory.metrics.blocked.increment(shard: context.shard)
        // The connection adds x-request-id to every local reply.
        var headers = HTTPHeaders()
        var status = i.status
        if let loc = i.redirect { headers.add(name: "location", value: loc) }
        if status < 200 || status > 599 { status = 403 }
        var reply = LocalReply(status: status, details: "waf_blocked", body: i.redirect == nil ? "Forbidden: request blocked by WAF (request id \(context.requestID))\n" : "",
                               headers: headers, closeConnection: i.drop)
        reply.responseFlags = "WAF"
        context.addSpanEvent("waf.blocked", attributes: [SpanAttribute("waf.rule_id", .int(Int64(i.ruleID))), SpanAttribute("http.response.status_code", .int(Int64(status)))])
        return .respond(reply)
    }

    /// Writes the audit lines of matches not yet written.
    /// Audit lines, metrics and span events for the matches not written yet. All lines of one
    /// flush go out in one write (O_APPEND keeps them together).
    private func flush(_ context: StreamContext) {
        guard let t = tx else { return }
        let all = t.matches
        guard written < all.count else { return }
        let mode = factory.mode == .shadow || t.mode != .on ? "detection_only" : "enforce"
        // What every line of this request shares, escaped once: the fields before rule_id,
        // and the end of ModSecurity's text ([hostname] [uri] [unique_id]).
        var prefix: [UInt8] = []
        JSONText.raw("{\"time_unix_nano\":", to: &prefix)
        JSONText.number(wallClockNanos(), to: &prefix)
        JSONText.raw(",\"request_id\":", to: &prefix)
        JSONText.append(context.requestID, to: &prefix)
        JSONText.raw(",\"client\":", to: &prefix)
        JSONText.append(context.clientAddress, to: &prefix)
        JSONText.raw(",\"method\":", to: &prefix)
        JSONText.append(method, to: &prefix)
        JSONText.raw(",\"uri\":", to: &prefix)
        JSONText.append(uri, to: &prefix)
        JSONText.raw(",\"rule_id\":", to: &prefix)
        var modeField: [UInt8] = []
        JSONText.raw(",\"mode\":", to: &modeField)
        JSONText.append(mode, to: &modeField)
        JSONText.raw(",\"message\":\"", to: &modeField)
        let suffix = RuleMatch.escapedRequestSuffix(uri: uri, uniqueID: context.requestID, hostname: context.serverAddress.host)
        var out: [UInt8] = []
        var lines = 0
        for m in all[written...] where m.log {
            factory.metrics.ruleMatches.labels(String(m.id)).increment(shard: context.shard)
            out.reserveCapacity(out.count + 2048)
            out.append(contentsOf: prefix)
            JSONText.number(m.id, to: &out)
            JSONText.raw(",\"phase\":", to: &out)
            JSONText.number(m.phase, to: &out)
            JSONText.raw(",\"severity\":", to: &out)
            JSONText.number(m.severity ?? 0, to: &out)
            JSONText.raw(m.disruptive ? ",\"disruptive\":true" : ",\"disruptive\":false", to: &out)
            out.append(contentsOf: modeField)
            m.appendModsecJSON(to: &out, requestSuffix: suffix)
            JSONText.raw("\"}\n", to: &out)
            lines += 1
            context.addSpanEvent("waf.rule_match", attributes: [
                SpanAttribute("waf.rule_id", .int(Int64(m.id))),
                SpanAttribute("waf.msg", .string(m.msg)),
            ])
        }
        if !out.isEmpty, !factory.audit.write(out) {
            factory.metrics.auditDropped.add(UInt64(lines), shard: context.shard)
        }
        written = all.count
    }
}

/// JSON text built as UTF-8 bytes.
enum JSONText {
    /// Appends `s` as a JSON string (quoted, escaped).
    static func append(_ s: String, to out: inout [UInt8]) {
        out.append(34)
        JSONEscape.append(s, to: &out)
        out.append(34)
    }

    /// Appends text that is already JSON.
    static func raw(_ s: String, to out: inout [UInt8]) {
        var s = s
        s.withUTF8 { out.append(contentsOf: $0) }
    }

    /// Appends a decimal integer (no String in between: a line has several).
    static func number(_ n: Int, to out: inout [UInt8]) {
        if n < 0 { out.append(UInt8(ascii: "-")) }
        number(UInt64(n.magnitude), to: &out)
    }

    static func number(_ n: UInt64, to out: inout [UInt8]) {
        let start = out.count
        var v = n
        repeat {
            out.append(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: v % 10))
            v /= 10
        } while v > 0
        out[start...].reverse()
    }
}

extension String {
    func wafTrim(_ set: String = " \t") -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
