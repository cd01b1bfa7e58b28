// swift-tools-version:5.9
// The Swift package of recurrent-depth: the C library as a binary target
// (build/RecurrentDepthC.xcframework, made by ./build-xcframework.sh) and a
// Swift wrapper over it. See README.md.
import PackageDescription

let package = Package(
    name: "RecurrentDepth",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "RecurrentDepth", targets: ["RecurrentDepth"]),
        .executable(name: "rd-swift-example", targets: ["RecurrentDepthExample"]),
    ],
    targets: [
        // SwiftPM wants the artifact's file name to be the target's name.
        .binaryTarget(name: "RecurrentDepthC", path: "build/RecurrentDepthC.xcframework"),
        .target(
            name: "RecurrentDepth",
            dependencies: ["RecurrentDepthC"],
            path: "Sources/RecurrentDepth",
            linkerSettings: [
                // What the static library (Rust std, ggml with Metal) needs.
                .linkedLibrary("c++"),
                .linkedFramework("Foundation"),
                .linkedFramework("Metal"),
                .linkedFramework("MetalKit"),
                .linkedFramework("Accelerate"),
            ]
        ),
        .executableTarget(
            name: "RecurrentDepthExample",
            dependencies: ["RecurrentDepth"],
            path: "Sources/RecurrentDepthExample"
        ),
    ]
)
