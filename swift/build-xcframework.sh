#!/usr/bin/env bash
# Builds EdgeMoE.xcframework (static library + header + module map) for iOS devices, the iOS
# simulator and macOS. Needs macOS with Xcode and rustup.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-darwin x86_64-apple-darwin)
for t in "${targets[@]}"; do
    rustup target add "$t"
    cargo build --release --lib --no-default-features --target "$t"
done
out=swift/build
rm -rf "$out" swift/EdgeMoE.xcframework
mkdir -p "$out/headers" "$out/ios-sim" "$out/macos"
cp include/edgemoe.h "$out/headers/"
cp swift/module.modulemap "$out/headers/module.modulemap"
lipo -create target/aarch64-apple-ios-sim/release/libedgemoe.a target/x86_64-apple-ios/release/libedgemoe.a \
    -output "$out/ios-sim/libedgemoe.a"
lipo -create target/aarch64-apple-darwin/release/libedgemoe.a target/x86_64-apple-darwin/release/libedgemoe.a \
    -output "$out/macos/libedgemoe.a"
xcodebuild -create-xcframework \
    -library target/aarch64-apple-ios/release/libedgemoe.a -headers "$out/headers" \
    -library "$out/ios-sim/libedgemoe.a" -headers "$out/headers" \
    -library "$out/macos/libedgemoe.a" -headers "$out/headers" \
    -output swift/EdgeMoE.xcframework
echo "wrote swift/EdgeMoE.xcframework"
