// swift-tools-version:5.9
// SwiftPM package over the edgemoe C library. Build the XCFramework first (macOS):
//   ./build-xcframework.sh        # produces EdgeMoE.xcframework next to this file
import PackageDescription

let package = Package(
    name: "EdgeMoE",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "EdgeMoE", targets: ["EdgeMoE"]),
    ],
    targets: [
        // The static library + edgemoe.h + module map, for every Apple platform slice.
        .binaryTarget(name: "CEdgeMoE", path: "EdgeMoE.xcframework"),
        .target(name: "EdgeMoE", dependencies: ["CEdgeMoE"]),
        .testTarget(name: "EdgeMoETests", dependencies: ["EdgeMoE"]),
    ]
)
