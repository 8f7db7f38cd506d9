import HTTP1
import OutriderCore

/// A request as the parser reported it, with body bytes gathered from the ranges it handed out.
struct ParsedRequest {
    var head: RequestHead
    var framing: BodyFraming
    var keepAlive: Bool
    var expectsContinue: Bool
    var upgrade: String?
    var body: [UInt8] = []
    var trailers: HTTPHeaders?
}

struct ParsedResponse {
    var head: ResponseHead
    var framing: BodyFraming
    var keepAlive: Bool
    var body: [UInt8] = []
    var trailers: HTTPHeaders?
}

/// Feeds `bytes` to a request parser `pieceSize` bytes at a time (all at once when nil), the way a
/// connection does: keep unconsumed bytes, parse until nil, then append the next read.
func parseRequests(_ bytes: [UInt8], pieceSize: Int? = nil, limits: HTTP1Limits = HTTP1Limits())
    -> (requests: [ParsedRequest], error: HTTP1ParseError?, parser: HTTP1RequestParser)
{
    var parser = HTTP1RequestParser(limits: limits)
    var requests: [ParsedRequest] = []
    var pending: [UInt8] = []
    var offset = 0
    repeat {
        let end = pieceSize.map { min(bytes.count, offset + $0) } ?? bytes.count
        pending.append(contentsOf: bytes[offset..<end])
        offset = end
        while true {
            let attempt = pending.withUnsafeBytes { buffer -> Result<(HTTP1RequestEvent?, Int, [UInt8]), HTTP1ParseError> in
                do throws(HTTP1ParseError) {
                    let (event, consumed) = try parser.parse(buffer)
                    var body: [UInt8] = []
                    if case .body(let range)? = event { body = Array(buffer[range]) }
                    return .success((event, consumed, body))
                } catch {
                    return .failure(error)
                }
            }
            switch attempt {
            case .failure(let error):
                return (requests, error, parser)
            case .success(let (event, consumed, body)):
                pending.removeFirst(consumed)
                guard let event else { break }
                switch event {
                case .head(let head, let framing, let keepAlive, let expectsContinue, let upgrade):
                    requests.append(ParsedRequest(head: head, framing: framing, keepAlive: keepAlive,
                                                  expectsContinue: expectsContinue, upgrade: upgrade))
                case .body:
                    requests[requests.count - 1].body += body
                case .end(let trailers):
                    requests[requests.count - 1].trailers = trailers
                }
                continue
            }
            break
        }
    } while offset < bytes.count
    return (requests, nil, parser)
}

func parseRequests(_ text: String, pieceSize: Int? = nil, limits: HTTP1Limits = HTTP1Limits())
    -> (requests: [ParsedRequest], error: HTTP1ParseError?, parser: HTTP1RequestParser)
{
    parseRequests(Array(text.utf8), pieceSize: pieceSize, limits: limits)
}

/// The error a request is rejected with, or nil if it parses.
func requestError(_ text: String, limits: HTTP1Limits = HTTP1Limits()) -> HTTP1ParseError? {
    parseRequests(text, limits: limits).error
}

func requestError(_ bytes: [UInt8]) -> HTTP1ParseError? {
    parseRequests(bytes).error
}

/// Feeds a response stream; `closeAtEnd` calls `finish()` once every byte has been parsed.
func parseResponses(_ text: String, method: String = "GET", pieceSize: Int? = nil, closeAtEnd: Bool = false)
    -> (responses: [ParsedResponse], error: HTTP1ParseError?, finished: Bool)
{
    let bytes = Array(text.utf8)
    var parser = HTTP1ResponseParser()
    parser.expectResponse(toMethod: method)
    var responses: [ParsedResponse] = []
    var pending: [UInt8] = []
    var offset = 0
    repeat {
        let end = pieceSize.map { min(bytes.count, offset + $0) } ?? bytes.count
        pending.append(contentsOf: bytes[offset..<end])
        offset = end
        while true {
            let attempt = pending.withUnsafeBytes { buffer -> Result<(HTTP1ResponseEvent?, Int, [UInt8]), HTTP1ParseError> in
                do throws(HTTP1ParseError) {
                    let (event, consumed) = try parser.parse(buffer)
                    var body: [UInt8] = []
                    if case .body(let range)? = event { body = Array(buffer[range]) }
                    return .success((event, consumed, body))
                } catch {
                    return .failure(error)
                }
            }
            switch attempt {
            case .failure(let error):
                return (responses, error, false)
            case .success(let (event, consumed, body)):
                pending.removeFirst(consumed)
                guard let event else { break }
                switch event {
                case .head(let head, let framing, let keepAlive):
                    responses.append(ParsedResponse(head: head, framing: framing, keepAlive: keepAlive))
                case .body:
                    responses[responses.count - 1].body += body
                case .end(let trailers):
                    responses[responses.count - 1].trailers = trailers
                    parser.expectResponse(toMethod: method)
                }
                continue
            }
            break
        }
    } while offset < bytes.count
    guard closeAtEnd else { return (responses, nil, false) }
    do throws(HTTP1ParseError) {
        if case .end(let trailers)? = try parser.finish() {
            responses[responses.count - 1].trailers = trailers
            return (responses, nil, true)
        }
        return (responses, nil, false)
    } catch {
        return (responses, error, false)
    }
}

extension Array where Element == UInt8 {
    var text: String { String(decoding: self, as: UTF8.self) }
}

extension HTTPHeaders {
    var pairs: [String] { fields.map { "\($0.name): \($0.value)" } }
}
