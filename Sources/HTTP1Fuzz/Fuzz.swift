import HTTP1
import OutriderCore
#if canImport(Glibc)
import Glibc
#endif

// Invariants checked for every input, for both parsers:
// - consumed never exceeds the buffer, body ranges lie inside the consumed prefix;
// - no livelock: an event that consumes nothing is followed by progress within a few calls;
// - after a throw the parser stays failed;
// - splitting the input at an arbitrary point (derived from the first byte) yields the same
//   transcript (heads, concatenated body bytes, trailers, the error) as feeding it in one piece,
//   and so does feeding it one byte at a time for short inputs.

/// A normalized record of what a parser reported, independent of how input was split.
private struct Transcript: Equatable {
    var entries: [String] = []
    var pendingBody: [UInt8] = []

    mutating func body(_ bytes: UnsafeRawBufferPointer) { pendingBody.append(contentsOf: bytes) }
    mutating func record(_ entry: String) {
        if !pendingBody.isEmpty {
            entries.append("body \(pendingBody)")
            pendingBody.removeAll()
        }
        entries.append(entry)
    }
    mutating func close() { record("close") }
}

private func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("invariant violated: \(message())") }
}

private func describe(_ headers: HTTPHeaders) -> String {
    headers.fields.map { "\($0.name)=\($0.value)" }.joined(separator: "|")
}

/// Feeds `pieces` in order, parsing until nil after each piece, as a connection would.
private func runRequestParser(_ pieces: [ArraySlice<UInt8>]) -> Transcript {
    var parser = HTTP1RequestParser()
    var transcript = Transcript()
    var pending: [UInt8] = []
    for piece in pieces {
        pending.append(contentsOf: piece)
        var idleCalls = 0
        while true {
            let attempt = pending.withUnsafeBytes { buffer -> Result<(event: HTTP1RequestEvent?, consumed: Int), HTTP1ParseError> in
                do throws(HTTP1ParseError) {
                    let result = try parser.parse(buffer)
                    check(result.consumed >= 0 && result.consumed <= buffer.count, "request consumed out of range")
                    if case .body(let range)? = result.event {
                        check(range.lowerBound >= 0 && range.upperBound <= result.consumed && !range.isEmpty,
                              "request body range \(range) outside consumed \(result.consumed)")
                        transcript.body(UnsafeRawBufferPointer(rebasing: buffer[range]))
                    }
                    return .success(result)
                } catch {
                    return .failure(error)
                }
            }
            guard case .success(let outcome) = attempt else {
                if case .failure(let error) = attempt { transcript.record("error \(error)") }
                let again = pending.withUnsafeBytes { buffer in (try? parser.parse(buffer)) == nil }
                check(again, "request parser recovered after an error")
                transcript.close()
                return transcript
            }
            pending.removeFirst(outcome.consumed)
            guard let event = outcome.event else { break }
            switch event {
            case .head(let head, let framing, let keepAlive, let expectsContinue, let upgrade):
                transcript.record("head \(head.method) \(head.target) \(head.version) [\(describe(head.headers))] \(framing) \(keepAlive) \(expectsContinue) \(upgrade ?? "-")")
                check(!parser.isIdle, "idle right after a head")
            case .body:
                break
            case .end(let trailers):
                transcript.record("end [\(describe(trailers))]")
                check(parser.isIdle && !parser.isReadingHead, "request parser not idle right after end")
            }
            idleCalls = outcome.consumed == 0 ? idleCalls + 1 : 0
            check(idleCalls <= 2, "request parser makes no progress")
        }
    }
    transcript.close()
    return transcript
}

private func runResponseParser(_ pieces: [ArraySlice<UInt8>], method: String) -> Transcript {
    var parser = HTTP1ResponseParser()
    parser.expectResponse(toMethod: method)
    var transcript = Transcript()
    var pending: [UInt8] = []
    for piece in pieces {
        pending.append(contentsOf: piece)
        var idleCalls = 0
        while true {
            let attempt = pending.withUnsafeBytes { buffer -> Result<(event: HTTP1ResponseEvent?, consumed: Int), HTTP1ParseError> in
                do throws(HTTP1ParseError) {
                    let result = try parser.parse(buffer)
                    check(result.consumed >= 0 && result.consumed <= buffer.count, "response consumed out of range")
                    if case .body(let range)? = result.event {
                        check(range.lowerBound >= 0 && range.upperBound <= result.consumed && !range.isEmpty,
                              "response body range \(range) outside consumed \(result.consumed)")
                        transcript.body(UnsafeRawBufferPointer(rebasing: buffer[range]))
                    }
                    return .success(result)
                } catch {
                    return .failure(error)
                }
            }
            guard case .success(let outcome) = attempt else {
                if case .failure(let error) = attempt { transcript.record("error \(error)") }
                transcript.close()
                return transcript
            }
            pending.removeFirst(outcome.consumed)
            guard let event = outcome.event else { break }
            switch event {
            case .head(let head, let framing, let keepAlive):
                transcript.record("head \(head.status) \(head.reason) \(head.version) [\(describe(head.headers))] \(framing) \(keepAlive)")
            case .body:
                break
            case .end(let trailers):
                transcript.record("end [\(describe(trailers))]")
                check(parser.isIdle, "response parser not idle right after end")
                parser.expectResponse(toMethod: method)
            }
            idleCalls = outcome.consumed == 0 ? idleCalls + 1 : 0
            check(idleCalls <= 2, "response parser makes no progress")
        }
    }
    do {
        if let event = try parser.finish() {
            guard case .end = event else { fatalError("finish returned a non-end event") }
            transcript.record("finish end")
            check(parser.isIdle, "not idle after finish")
        } else {
            transcript.record("finish nil")
        }
    } catch {
        transcript.record("finish error \(error)")
    }
    transcript.close()
    return transcript
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let control = data[0]
    let input = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    let split = input.isEmpty ? 0 : Int(control) % (input.count + 1)
    let whole = [input[...]]
    let halves = [input[..<split], input[split...]]
    let bytewise = input.count <= 512 ? input.indices.map { input[$0...$0] } : nil

    let requestWhole = runRequestParser(whole)
    check(runRequestParser(halves) == requestWhole, "request transcript depends on the split at \(split)")
    if let bytewise {
        check(runRequestParser(bytewise) == requestWhole, "request transcript differs byte-at-a-time")
    }

    let methods = ["GET", "HEAD", "CONNECT", "POST"]
    let method = methods[Int(control >> 6)]
    let responseWhole = runResponseParser(whole, method: method)
    check(runResponseParser(halves, method: method) == responseWhole, "response transcript depends on the split at \(split)")
    if let bytewise {
        check(runResponseParser(bytewise, method: method) == responseWhole, "response transcript differs byte-at-a-time")
    }

    // The serializer must emit HTTP/1.1 heads the parser reads back identically
    // (1.0 heads may legitimately fail as 1.1, e.g. without Host).
    if case .head(let head, _, _, _, _)? = firstRequestHead(input), head.version == .http11 {
        var out = ByteBuffer()
        HTTP1Serializer.writeRequestHead(head, into: &out)
        var parser = HTTP1RequestParser()
        let reparsed = out.withReadableBytes { buffer in try? parser.parse(buffer) }
        guard case .head(let again, _, _, _, _)? = reparsed?.event else { fatalError("serialized head did not parse back") }
        check(again.method == head.method && again.target == head.target
              && describe(again.headers) == describe(head.headers), "serialized head changed on re-parse")
    }
    return 0
}

private func firstRequestHead(_ input: [UInt8]) -> HTTP1RequestEvent? {
    var parser = HTTP1RequestParser()
    return input.withUnsafeBytes { buffer in try? parser.parse(buffer).event }
}

#if !FUZZING
import FuzzReplay

// Without libFuzzer (plain `swift build`): replays the files named on the command line.
@main struct Replay {
    static func main() { replayFiles(CommandLine.arguments.dropFirst(), through: fuzz) }
}
#endif
