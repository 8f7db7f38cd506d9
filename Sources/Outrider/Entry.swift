#if canImport(Glibc)
import Glibc
#endif
import Foundation

let outriderVersion = "0.1.0"

@main
struct OutriderMain {
    static func main() {
        let args: Arguments
        do {
            args = try Arguments(CommandLine.arguments)
        } catch {
            FileHandle.standardError.write(Data("outrider: \(error.message)\n\n\(Arguments.usage)\n".utf8))
            exit(2)
        }
        switch args.command {
        case .help:
            print(Arguments.usage)
        case .version:
            print("outrider \(outriderVersion)")
        case .check:
            exit(CheckCommand.run(args))
        case .run:
            RunCommand.run(args)
        }
    }
}
