import WAF
#if canImport(Glibc)
import Glibc
#endif

// libFuzzer entry for the WAF's input parsers (`make fuzz-waf`). The first byte picks what the
// rest of the input is:
// - a SecLang rule file (the loader must answer with a rule set or file:line errors, never trap);
// - a request body for one of the body processors (urlencoded, multipart, JSON, XML), sent with
//   the rest also as query string and cookie, through rules that read every request collection
//   with every transformation and the byte-level operators.
// Invariants: no trap, no hang (libFuzzer's -timeout), and the same input always gives the same
// decision (the engine has no hidden state between transactions).

private let rules = """
SecRuleEngine On
SecRequestBodyAccess On
SecRequestBodyLimit 65536
SecRequestBodyNoFilesLimit 65536
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/json" "id:1,phase:1,pass,nolog,t:lowercase,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "@rx ^(?:application|text)/xml" "id:2,phase:1,pass,nolog,t:lowercase,ctl:requestBodyProcessor=XML"
SecRule ARGS|ARGS_NAMES|REQUEST_COOKIES|REQUEST_COOKIES_NAMES|FILES|FILES_NAMES|XML:/*|REQUEST_BODY|REQUEST_URI|REQUEST_FILENAME \
    "@rx (?i)(?:union\\s+select|<script|\\.\\./|;\\s*cat\\s)" \
    "id:10,phase:2,pass,log,capture,t:none,t:urlDecodeUni,t:htmlEntityDecode,t:jsDecode,t:cssDecode,t:removeNulls,t:cmdLine,\
    t:compressWhitespace,t:replaceComments,t:normalizePath,t:lowercase,msg:'m %{TX.0} %{MATCHED_VAR_NAME}',setvar:tx.score=+5"
SecRule ARGS|REQUEST_BODY "@detectSQLi" "id:11,phase:2,pass,log,t:none,t:utf8toUnicode,t:urlDecodeUni,t:removeNulls,multiMatch,setvar:tx.score=+5"
SecRule ARGS|REQUEST_COOKIES "@detectXSS" "id:12,phase:2,pass,log,t:none,t:utf8toUnicode,t:urlDecodeUni,t:htmlEntityDecode,t:jsDecode,t:cssDecode,t:removeNulls"
SecRule ARGS|REQUEST_URI_RAW "@validateUrlEncoding" "id:13,phase:2,pass,log"
SecRule ARGS|REQUEST_BODY "@validateUtf8Encoding" "id:14,phase:2,pass,log,t:none,t:base64Decode,t:hexEncode,t:sha1,t:length"
SecRule ARGS|ARGS_NAMES "@pm select union script passwd" "id:15,phase:2,pass,log,t:none,t:base64DecodeExt,t:sqlHexDecode,t:removeWhitespace,t:normalizePathWin"
SecRule ARGS "@validateByteRange 9,10,13,32-126" "id:16,phase:2,pass,log,t:none,t:urlDecode,t:trim,t:escapeSeqDecode"
SecRule MULTIPART_STRICT_ERROR|REQBODY_ERROR|&ARGS|ARGS_COMBINED_SIZE|FILES_SIZES|FILES_COMBINED_SIZE "!@eq 0" "id:17,phase:2,pass,log,chain"
    SecRule TX:score "@ge 5" "setvar:tx.blocking=1"
SecRule TX:blocking "@eq 1" "id:18,phase:2,deny,status:403,log"
"""

private let ruleSet: RuleSet = {
    switch SecLang.load(text: rules, name: "fuzz.conf") {
    case .success(let r): return r
    case .failure(let e): fatalError("fuzz rules do not load: \(e)")
    }
}()

private let contentTypes = [
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/json",
    "text/xml",
]

private func decide(_ input: [UInt8], kind: Int) -> (Int?, Int) {
    let t = Transaction(ruleSet: ruleSet, requestID: "fuzz", clientAddress: "10.0.0.1")
    // The input as the query string and a cookie too (bytes above 0x7F as Latin-1 characters).
    let text = String(decoding: input.prefix(512).map { $0 < 0x80 && $0 >= 0x20 ? $0 : UInt8(ascii: "%") }, as: UTF8.self)
    let headers = [("Host", "fuzz.example"), ("Content-Type", contentTypes[kind]), ("Cookie", text),
                   ("Content-Length", String(input.count))]
    var iv = t.processRequestHeaders(method: "POST", target: "/upload?" + text, protocol: "HTTP/1.1", headers: headers)
    if iv == nil {
        t.appendRequestBody(input)
        iv = t.processRequestBody()
    }
    t.processLogging()
    return (iv?.status, t.matches.count)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let control = Int(data[0])
    let input = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    if control % 5 == 4 {
        // A rule file: loading either succeeds or reports problems with a position.
        let text = String(input.map { Character(Unicode.Scalar($0)) })
        if case .failure(let errors) = SecLang.load(text: text, name: "input.conf") {
            if errors.diagnostics.isEmpty { fatalError("a failed load without a diagnostic") }
            for d in errors.diagnostics where d.line < 0 { fatalError("negative line in \(d)") }
        }
        return 0
    }
    let kind = control % 5 % contentTypes.count
    let first = decide(input, kind: kind)
    let again = decide(input, kind: kind)
    if first.0 != again.0 || first.1 != again.1 { fatalError("the same request decided differently: \(first) vs \(again)") }
    return 0
}

#if !FUZZING
import FuzzReplay

// Without libFuzzer (plain `swift build`): replays the files named on the command line.
@main struct Replay {
    static func main() { replayFiles(CommandLine.arguments.dropFirst(), through: fuzz) }
}
#endif
