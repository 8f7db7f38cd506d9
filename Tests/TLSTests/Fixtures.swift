import Foundation
@testable import TLS

/// Certificates generated once per test run with the openssl CLI into a temporary directory.
struct Fixtures: Sendable {
    let dir: String
    func path(_ name: String) -> String { dir + "/" + name }

    static let shared: Result<Fixtures, FixtureError> = make()

    struct FixtureError: Error, CustomStringConvertible { let description: String }

    static func get() throws -> Fixtures { try shared.get() }

    private static func make() -> Result<Fixtures, FixtureError> {
        let dir = NSTemporaryDirectory() + "outrider-tls-tests-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try script.write(toFile: dir + "/make.sh", atomically: true, encoding: .utf8)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-e", dir + "/make.sh"]
            p.currentDirectoryURL = URL(fileURLWithPath: dir)
            let err = Pipe()
            p.standardError = err
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            let errData = err.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            guard p.terminationStatus == 0 else {
                return .failure(FixtureError(description: "make.sh failed: " + String(decoding: errData, as: UTF8.self)))
            }
            return .success(Fixtures(dir: dir))
        } catch {
            return .failure(FixtureError(description: "\(error)"))
        }
    }

    static let script = #"""
cat > req.cnf <<'X'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
X
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
ca() {
  key "$1"
  openssl req -x509 -new -config req.cnf -extensions v3_ca -key "$1.key" -subj "$2" -days 3650 -out "$1.crt"
    }
# leaf NAME CA SUBJECT EXT
leaf() {
  key "$1"
  openssl req -new -config req.cnf -key "$1.key" -subj "$3" -out "$1.csr"
  printf '%b' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 365 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    }
ca ca "/CN=Outrider Test CA"
ca otherca "/CN=Other CA"
leaf server ca "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
leaf api ca "/CN=api.example.com" "subjectAltName=DNS:api.example.com\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
leaf client ca "/O=Example, Inc./CN=client" "subjectAltName=URI:spiffe://example.org/ns/default/sa/client,DNS:client.example.org\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
leaf twouri ca "/CN=two-uris" "subjectAltName=URI:spiffe://example.org/a,URI:spiffe://example.org/b\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
leaf foreign otherca "/CN=foreign" "subjectAltName=URI:spiffe://other.org/x\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
# An expired client certificate: `openssl ca` takes explicit start and end dates.
mkdir -p newcerts; : > index.txt; echo 1000 > serial
cat > ca.cnf <<'X'
[ca]
default_ca = testca
[testca]
database = index.txt
new_certs_dir = newcerts
serial = serial
certificate = ca.crt
private_key = ca.key
default_md = sha256
policy = policy_any
unique_subject = no
[policy_any]
commonName = supplied
[client_ext]
subjectAltName = URI:spiffe://example.org/expired
basicConstraints = CA:FALSE
extendedKeyUsage = clientAuth
X
key expired
openssl req -new -config req.cnf -key expired.key -subj "/CN=expired" -out expired.csr
openssl ca -batch -config ca.cnf -extensions client_ext -startdate 20200101000000Z -enddate 20200201000000Z -notext -in expired.csr -out expired.crt 2>/dev/null
"""#
}
