/// A response Outrider produces itself instead of forwarding (errors, filter denials, admin).
/// Every local reply carries a short reason that ends up in the access log (`response_code_details`).
public struct LocalReply: Sendable {
    public var status: Int
    /// Short machine-readable reason, e.g. "upstream_connect_refused", "header_timeout".
    public var details: String
    public var body: String
    public var headers: HTTPHeaders
    /// Whether the connection must be closed after this reply (protocol errors).
    public var closeConnection: Bool
    /// Envoy-style response flag for the access log when a filter sends this reply
    /// (e.g. "RL" rate limited, "UAEX" unauthorized); "-" when none applies.
    public var responseFlags: String = "-"

    public init(status: Int, details: String, body: String? = nil, headers: HTTPHeaders = HTTPHeaders(), closeConnection: Bool = false) {
        self.status = status
        self.details = details
        self.body = body ?? "\(reasonPhrase(status)): \(details)\n"
        self.headers = headers
        self.closeConnection = closeConnection
    }
}
