//! The C examples and the C contract test, built with CMake against the cdylib and staticlib
//! and run by ctest. Needs cmake and a C/C++ compiler (CI installs cmake); skipped with a
//! message when cmake is missing.

use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cmake_examples_and_contract_tests() {
    if Command::new("cmake").arg("--version").output().is_err() {
        eprintln!("SKIPPED: cmake not found (apt-get install cmake)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The target directory this test binary came from (TARGET/PROFILE/deps/c_api-HASH), which
    // is not ROOT/target when CARGO_TARGET_DIR is set.
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .filter(|t| t.join("CACHEDIR.TAG").exists())
        .map_or_else(|| root.join("target"), Path::to_path_buf);
    let build = target.join("cmake-test");
    let _ = std::fs::remove_dir_all(&build);
    // The library is built by cargo from inside CMake, into that same target directory
    // (cargo releases its lock while tests run), so it is usually up to date already.
    run(Command::new("cmake")
        .arg("-S")
        .arg(root)
        .arg("-B")
        .arg(&build)
        .arg("-DCMAKE_BUILD_TYPE=Release")
        .arg(format!("-DEDGEMOE_CARGO_TARGET_DIR={}", target.display())));
    run(Command::new("cmake").arg("--build").arg(&build).arg("-j2"));
    run(Command::new("ctest")
        .arg("--output-on-failure")
        .current_dir(&build));

    // Install, then build a downstream project with find_package(EdgeMoE CONFIG).
    let prefix = target.join("cmake-test-install");
    let _ = std::fs::remove_dir_all(&prefix);
    run(Command::new("cmake")
        .arg("--install")
        .arg(&build)
        .arg("--prefix")
        .arg(&prefix));
    let consumer = target.join("cmake-test-consumer");
    let _ = std::fs::remove_dir_all(&consumer);
    run(Command::new("cmake")
        .arg("-S")
        .arg(root.join("tests/c/consumer"))
        .arg("-B")
        .arg(&consumer)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display())));
    run(Command::new("cmake").arg("--build").arg(&consumer));
    for exe in ["consumer_shared", "consumer_static"] {
        run(&mut Command::new(consumer.join(exe)));
    }
    assert!(
        prefix.join("lib/pkgconfig/edgemoe.pc").exists()
            || prefix.join("lib64/pkgconfig/edgemoe.pc").exists()
    );
}
