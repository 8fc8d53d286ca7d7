import EdgeMoE
import XCTest

final class EdgeMoETests: XCTestCase {
    func testDemoModelWritesText() async throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../../models/demo.gguf").path
        let model = try Model(path: path)
        let session = try Session(model: model)
        var text = ""
        for try await piece in session.generate("ROMEO:", maxTokens: 16) { text += piece }
        XCTAssertFalse(text.isEmpty)
    }
}
