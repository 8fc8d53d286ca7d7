// Swift wrapper over the edgemoe C API: Model and Session own their handles; generation is an
// AsyncThrowingStream of text pieces (always whole UTF-8 characters).
import CEdgeMoE
import Foundation

/// `EMOE_STATUS_OK`. In C `emoe_status` is an `int32_t` (ABI 4), so Swift sees `Int32`.
let statusOK: Int32 = 0

public struct EdgeMoEError: Error, CustomStringConvertible {
    /// One of the `EMOE_STATUS_*` numbers.
    public let status: Int32
    public let message: String
    public var description: String {
        "\(String(cString: emoe_status_string(status))): \(message)"
    }
}

/// A loaded model. Thread-safe; share it between sessions and threads.
public final class Model: @unchecked Sendable {
    let handle: OpaquePointer

    /// Loads a GGUF model. `memoryBudget` in bytes (0: no limit) streams experts from storage.
    public init(path: String, memoryBudget: UInt64 = 0, contextLength: UInt32 = 0) throws {
        var params = emoe_model_params()
        emoe_model_params_default(&params)
        params.memory_budget = memoryBudget
        params.context_length = contextLength
        var raw: OpaquePointer?
        var error = [CChar](repeating: 0, count: 512)
        let status = emoe_model_load(path, &params, &raw, &error, error.count)
        guard status == statusOK, let raw else {
            throw EdgeMoEError(status: status, message: String(cString: error))
        }
        handle = raw
    }

    deinit { emoe_model_free(handle) }

    /// Lowers or raises the memory budget while loaded (a memory-pressure handler).
    public func setMemoryBudget(_ bytes: UInt64) throws {
        let status = emoe_model_set_memory_budget(handle, bytes)
        guard status == statusOK else {
            throw EdgeMoEError(status: status, message: modelError(handle))
        }
    }
}

/// One conversation. Use from one task at a time; `cancel()` from anywhere.
public final class Session: @unchecked Sendable {
    let model: Model
    let handle: OpaquePointer

    public init(model: Model, contextLength: UInt32 = 0) throws {
        self.model = model
        var raw: OpaquePointer?
        let status = emoe_session_new(model.handle, contextLength, &raw)
        guard status == statusOK, let raw else {
            throw EdgeMoEError(status: status, message: modelError(model.handle))
        }
        handle = raw
    }

    deinit { emoe_session_free(handle) }

    /// Stops the current generation; it finishes with a cancellation error.
    public func cancel() { emoe_session_cancel(handle) }

    /// Streams the continuation of `prompt`, piece by piece.
    public func generate(_ prompt: String, maxTokens: UInt32 = 128, temperature: Float = 0) -> AsyncThrowingStream<String, Error> {
        AsyncThrowingStream { continuation in
            let worker = Thread { [self] in
                var params = emoe_generate_params()
                emoe_generate_params_default(&params)
                params.max_tokens = maxTokens
                var sampling = emoe_sampling_params()
                emoe_sampling_params_default(&sampling)
                sampling.temperature = temperature
                final class Sink { let c: AsyncThrowingStream<String, Error>.Continuation; init(_ c: AsyncThrowingStream<String, Error>.Continuation) { self.c = c } }
                let sink = Unmanaged.passRetained(Sink(continuation))
                let status = withUnsafePointer(to: &sampling) { samplingPtr in
                    params.sampling = samplingPtr
                    return prompt.withCString { cPrompt in
                    emoe_session_generate(handle, cPrompt, strlen(cPrompt), &params, { user, piece, len in
                        let sink = Unmanaged<Sink>.fromOpaque(user!).takeUnretainedValue()
                        let bytes = UnsafeRawBufferPointer(start: piece, count: len)
                        sink.c.yield(String(decoding: bytes, as: UTF8.self))
                        return true
                    }, sink.toOpaque(), nil)
                    }
                }
                sink.release()
                if status == statusOK {
                    continuation.finish()
                } else {
                    continuation.finish(throwing: EdgeMoEError(status: status, message: String(cString: emoe_session_last_error(handle))))
                }
            }
            continuation.onTermination = { [weak self] _ in self?.cancel() }
            worker.start()
        }
    }
}

/// The model's last error, copied into Swift-owned memory (safe while other tasks use the model).
func modelError(_ model: OpaquePointer) -> String {
    var buf = [CChar](repeating: 0, count: 512)
    var len = 0
    _ = emoe_model_last_error_copy(model, &buf, buf.count, &len)
    return String(cString: buf)
}
