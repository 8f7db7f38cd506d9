import OutriderCore

/// Header fields that describe one connection and must not be forwarded (RFC 9110 §7.6.1),
/// in lowercase. Names listed in a Connection field are hop-by-hop too (see `connectionTokens`).
public let hopByHopHeaderNames: [String] = [
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
]

/// The tokens of every Connection field, lowercased, OWS trimmed, empty elements dropped.
public func connectionTokens(_ headers: HTTPHeaders) -> [String] {
    var tokens: [String] = []
    for field in headers.fields where field.name.asciiCaseInsensitiveEquals("connection") {
        for element in field.value.utf8.split(separator: asciiComma) {
            var start = element.startIndex, end = element.endIndex
            while start < end && isOWS(element[start]) { start = element.index(after: start) }
            while end > start && isOWS(element[element.index(before: end)]) { end = element.index(before: end) }
            if start == end { continue }
            tokens.append(String(decoding: element[start..<end], as: UTF8.self).asciiLowercased)
        }
    }
    return tokens
}

/// Whether `name` is one of `hopByHopHeaderNames` (ASCII case-insensitive).
public func isHopByHopHeader(_ name: String) -> Bool {
    // Dispatch on length first: most forwarded names fail here without a byte compare.
    switch name.utf8.count {
    case 2: return name.asciiCaseInsensitiveEquals("te")
    case 7: return name.asciiCaseInsensitiveEquals("trailer") || name.asciiCaseInsensitiveEquals("upgrade")
    case 10: return name.asciiCaseInsensitiveEquals("connection") || name.asciiCaseInsensitiveEquals("keep-alive")
    case 16: return name.asciiCaseInsensitiveEquals("proxy-connection")
    case 17: return name.asciiCaseInsensitiveEquals("transfer-encoding")
    default: return false
    }
}

/// Removes the hop-by-hop fields a proxy must not forward: the fixed set in `hopByHopHeaderNames`
/// and every field named by a Connection token. Call it after reading what the connection needs
/// (keep-alive, upgrade), before forwarding the head.
public func removeHopByHopHeaders(_ headers: inout HTTPHeaders) {
    var needsRemoval = false
    for field in headers.fields where isHopByHopHeader(field.name) {
        needsRemoval = true
        break
    }
    if !needsRemoval { return }
    let named = connectionTokens(headers)
    headers.removeAll { name in
        if isHopByHopHeader(name) { return true }
        for token in named where name.asciiCaseInsensitiveEquals(token) { return true }
        return false
    }
}
