// Head sampling (OTel SDK samplers and OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG).

/// A sampler configuration value that could not be used; `message` is for the operator.
public struct SamplerConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public enum Sampler: Sendable, Equatable {
    case alwaysOn
    case alwaysOff
    case traceIDRatio(Double)
    case parentBasedAlwaysOn
    case parentBasedAlwaysOff
    case parentBasedTraceIDRatio(Double)

    /// The OTel default, `parentbased_always_on`.
    public static let `default` = Sampler.parentBasedAlwaysOn

    /// Parent-based kinds follow a present (valid) parent's sampled flag; the others, and a
    /// root span, decide by their own rule. The ratio rule is deterministic over the trace id:
    /// sampled iff `(traceID.low >> 1) < UInt64(ratio * 2^63)`, ratio clamped to [0, 1]
    /// (NaN counts as 0), so every hop that uses the same ratio agrees.
    public func shouldSample(parent: SpanContext?, traceID: TraceID) -> Bool {
        switch self {
        case .alwaysOn: return true
        case .alwaysOff: return false
        case .traceIDRatio(let r): return Sampler.ratioDecision(r, traceID)
        case .parentBasedAlwaysOn:
            if let parent, parent.isValid { return parent.sampled }
            return true
        case .parentBasedAlwaysOff:
            if let parent, parent.isValid { return parent.sampled }
            return false
        case .parentBasedTraceIDRatio(let r):
            if let parent, parent.isValid { return parent.sampled }
            return Sampler.ratioDecision(r, traceID)
        }
    }

    static func ratioDecision(_ ratio: Double, _ traceID: TraceID) -> Bool {
        let r: Double = ratio.isNaN ? 0 : (ratio < 0 ? 0 : (ratio > 1 ? 1 : ratio))
        // r * 2^63 is in [0, 2^63]: exact conversion, no trap.
        let bound = UInt64(r * 9_223_372_036_854_775_808.0)
        return (traceID.low >> 1) < bound
    }

    /// Reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG. `.success(nil)` when the sampler
    /// is unset or empty (the caller applies its default, normally `parentbased_always_on`).
    /// Names are matched case-insensitively after trimming spaces. For the ratio samplers the
    /// argument defaults to 1.0 when unset or empty, and must be a finite number in [0, 1];
    /// the argument of other samplers is ignored. Unknown or unsupported sampler names
    /// (jaeger_remote, xray, …) and bad arguments are errors.
    public static func fromEnvironment(sampler: String?, argument: String?) -> Result<Sampler?, SamplerConfigError> {
        guard let raw = sampler else { return .success(nil) }
        let name = String(decoding: TraceContextPropagation.trimOWS(Array(raw.utf8)).map(TraceHex.asciiLower), as: UTF8.self)
        if name.isEmpty { return .success(nil) }
        func ratio() -> Result<Double, SamplerConfigError> {
            guard let argument else { return .success(1.0) }
            let a = String(decoding: TraceContextPropagation.trimOWS(Array(argument.utf8)), as: UTF8.self)
            if a.isEmpty { return .success(1.0) }
            guard let v = Double(a), v.isFinite, !a.hasPrefix("0x"), !a.hasPrefix("-0x") else {
                return .failure(SamplerConfigError("OTEL_TRACES_SAMPLER_ARG=\(argument) is not a number"))
            }
            guard v >= 0, v <= 1 else {
                return .failure(SamplerConfigError("OTEL_TRACES_SAMPLER_ARG=\(argument) is outside [0, 1]"))
            }
            return .success(v)
        }
        switch name {
        case "always_on": return .success(.alwaysOn)
        case "always_off": return .success(.alwaysOff)
        case "parentbased_always_on": return .success(.parentBasedAlwaysOn)
        case "parentbased_always_off": return .success(.parentBasedAlwaysOff)
        case "traceidratio": return ratio().map { .traceIDRatio($0) }
        case "parentbased_traceidratio": return ratio().map { .parentBasedTraceIDRatio($0) }
        case "jaeger_remote", "parentbased_jaeger_remote", "xray":
            return .failure(SamplerConfigError("OTEL_TRACES_SAMPLER=\(raw) is not supported"))
        default:
            return .failure(SamplerConfigError("OTEL_TRACES_SAMPLER=\(raw) is not a known sampler"))
        }
    }
}
