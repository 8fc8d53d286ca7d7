//! The C examples and the C contract test, built with CMake against the cdylib and staticlib
//! and run by ctest. Needs cmake (with ctest), a C and a C++ compiler, and on Linux
//! AddressSanitizer, valgrind, `nm` and `readelf`: when one is missing the test fails and says
//! what to install.
//! `EDGEMOE_SKIP_C_TESTS=1` skips it on request (CI never sets it).

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

/// The opt-out variable: set to 1, the test is skipped and says so.
const OPT_OUT: &str = "EDGEMOE_SKIP_C_TESTS";

/// Whether `program --version` runs.
fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The first word of `$var` if set, else the first of `candidates` that runs.
fn compiler(var: &str, candidates: &[&str]) -> Option<String> {
    if let Some(cmd) = std::env::var(var).ok().filter(|v| !v.trim().is_empty()) {
        let program = cmd
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        return runs(&program).then_some(program);
    }
    candidates
        .iter()
        .find(|c| runs(c))
        .map(|c| (*c).to_string())
}

/// What the test needs and cannot find, as names to show the user.
fn missing_tools() -> Vec<&'static str> {
    let mut missing = Vec::new();
    if !runs("cmake") {
        missing.push("cmake");
    }
    if !runs("ctest") {
        missing.push("ctest (part of cmake)");
    }
    if compiler("CC", &["cc", "gcc", "clang"]).is_none() {
        missing.push("a C compiler (cc, gcc or clang, or $CC)");
    }
    if compiler("CXX", &["c++", "g++", "clang++"]).is_none() {
        missing.push("a C++ compiler (c++, g++ or clang++, or $CXX)");
    }
    // The contract test runs under valgrind on Linux (CMake's EDGEMOE_REQUIRE_TEST_TOOLS
    // fails there too, but this says it first and plainly).
    if cfg!(target_os = "linux") && !runs("valgrind") {
        missing.push("valgrind");
    }
    missing
}

#[test]
fn cmake_examples_and_contract_tests() {
    if std::env::var(OPT_OUT).is_ok_and(|v| v == "1") {
        eprintln!(
            "SKIPPED on request ({OPT_OUT}=1): the C examples and C API contract tests did not run"
        );
        return;
    }
    let missing = missing_tools();
    assert!(
        missing.is_empty(),
        "the C API tests cannot run: missing {}. Install them (Debian/Ubuntu: \
         apt-get install cmake gcc g++ valgrind), or set {OPT_OUT}=1 to skip this test on purpose",
        missing.join(", ")
    );
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
        // Fail, rather than leave the ASan and exported-symbol tests out, where their tools
        // are missing on Linux.
        .arg(format!(
            "-DEDGEMOE_REQUIRE_TEST_TOOLS={}",
            if cfg!(target_os = "linux") {
                "ON"
            } else {
                "OFF"
            }
        ))
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
    if cfg!(target_os = "linux") {
        // libedgemoe.so.N (N the ABI version), stripped, its debug info beside it, and the
        // libedgemoe.so link for linkers.
        let libdir = ["lib", "lib64"]
            .iter()
            .map(|d| prefix.join(d))
            .find(|d| d.join("libedgemoe.so").exists())
            .expect("an installed libedgemoe.so");
        let soname = format!("libedgemoe.so.{}", edgemoe::capi::EMOE_ABI_VERSION);
        let lib = libdir.join(&soname);
        assert!(lib.exists() && libdir.join(format!("{soname}.debug")).exists());
        assert_eq!(
            std::fs::read_link(libdir.join("libedgemoe.so")).unwrap(),
            Path::new(&soname)
        );
        let sections = Command::new("readelf")
            .arg("-S")
            .arg(&lib)
            .output()
            .unwrap();
        let sections = String::from_utf8_lossy(&sections.stdout);
        assert!(sections.contains(".gnu_debuglink"), "{sections}");
        assert!(
            !sections.contains(".debug_info"),
            "the installed library has debug info"
        );
    }
}
