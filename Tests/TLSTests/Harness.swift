import OutriderCore
@testable import TLS

/// One side of an in-memory connection: the TLS connection plus what it has read and failed with.
final class Side {
    let tls: TLSConnection
    var plaintext: [UInt8] = []
    var error: TLSError?
    var sawCloseNotify = false
    init(_ tls: TLSConnection) { self.tls = tls }

    /// Runs `readPlaintext` until it needs more input.
    func step() {
        guard error == nil, !sawCloseNotify else { return }
        do {
            loop: while true {
                switch try tls.readPlaintext(into: &plaintext) {
                case .handshakeCompleted, .progress: continue
                case .wantMoreInput: break loop
                case .closeNotify: sawCloseNotify = true; break loop
                }
            }
        } catch {
            self.error = error
        }
    }
}

/// Moves ciphertext between a client and a server until neither has anything to say.
@discardableResult
func pump(_ client: Side, _ server: Side, rounds: Int = 30) -> Int {
    var moved = 0
    for _ in 0..<rounds {
        var c2s: [UInt8] = []
        client.tls.takeCiphertext(into: &c2s)
        if !c2s.isEmpty { server.tls.receive(c2s) }
        server.step()
        var s2c = ByteBuffer()
        server.tls.takeCiphertext(into: &s2c)
        if !s2c.isEmpty { client.tls.receive(s2c.readableArray) }
        client.step()
        moved += c2s.count + s2c.readableBytes
        if c2s.isEmpty && s2c.isEmpty && client.tls.pendingCiphertext == 0 && server.tls.pendingCiphertext == 0 {
            if client.tls.isHandshakeComplete && server.tls.isHandshakeComplete { break }
            if client.error != nil || server.error != nil { break }
        }
    }
    return moved
}

struct Endpoints {
    let client: Side
    let server: Side
}

func connect(
    server: TLSServerContext, client: TLSClientContext, serverName: String? = "localhost", session: TLSSession? = nil
) throws -> Endpoints {
    let c = Side(try TLSConnection(client: client, serverName: serverName, session: session))
    let s = Side(try TLSConnection(context: server))
    // Kick the client: its first readPlaintext writes the ClientHello.
    c.step()
    pump(c, s)
    return Endpoints(client: c, server: s)
}
