//! include/edgemoe.h is what cbindgen generates from src/capi/ (regenerate with
//! `EMOE_BLESS=1 cargo test --test header`).

#[test]
fn header_is_up_to_date() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).unwrap();
    // Only src/capi/ defines the C API; parsing just those files keeps the crate's other
    // public constants and types out of the header.
    // (cbindgen follows its `mod` declarations.)
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/capi/mod.rs"))
        .generate()
        .expect("cbindgen failed");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let path = root.join("include/edgemoe.h");
    if std::env::var_os("EMOE_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/edgemoe.h is stale: run `EMOE_BLESS=1 cargo test --test header` and commit it"
    );
}

/// The version macros are inside the include guard and match Cargo.toml.
#[test]
fn version_macros_match_the_package_and_sit_inside_the_guard() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = std::fs::read_to_string(root.join("include/edgemoe.h")).unwrap();
    let guard_end = header
        .rfind("#endif  /* EDGEMOE_H */")
        .expect("the include guard's #endif");
    for (name, want) in [
        ("EMOE_VERSION_MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("EMOE_VERSION_MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("EMOE_VERSION_PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        let define = format!("#define {name} {want}\n");
        let at = header
            .find(&define)
            .unwrap_or_else(|| panic!("edgemoe.h lacks `{}` (Cargo.toml)", define.trim()));
        assert!(
            at < guard_end,
            "{name} is defined outside the include guard"
        );
        assert_eq!(header.matches(&format!("#define {name} ")).count(), 1);
    }
}

/// cbindgen.toml, which writes the version macros, matches Cargo.toml's version.
#[test]
fn cbindgen_config_has_the_package_version() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = std::fs::read_to_string(root.join("cbindgen.toml")).unwrap();
    let want = format!(
        "#define EMOE_VERSION_MAJOR {}\n#define EMOE_VERSION_MINOR {}\n#define EMOE_VERSION_PATCH {}\n",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH")
    );
    assert!(
        config.contains(&want),
        "cbindgen.toml's EMOE_VERSION_* differ from Cargo.toml's version: update them"
    );
}

/// The Swift wrapper cannot be compiled here; at least every C function it calls is declared
/// in the header.
#[test]
fn every_c_function_the_swift_wrapper_calls_is_in_the_header() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = std::fs::read_to_string(root.join("include/edgemoe.h")).unwrap();
    let swift = std::fs::read_to_string(root.join("swift/Sources/EdgeMoE/EdgeMoE.swift")).unwrap();
    let mut called = std::collections::BTreeSet::new();
    let bytes = swift.as_bytes();
    let mut i = 0;
    while let Some(at) = swift[i..].find("emoe_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if before_ok && bytes.get(end) == Some(&b'(') {
            called.insert(&swift[start..end]);
        }
        i = end.max(start + 1);
    }
    assert!(called.contains("emoe_session_generate"), "{called:?}");
    for f in called {
        // A declaration: the name followed by its parameter list, or a struct initialiser.
        let declared = header.contains(&format!(" {f}("))
            || header.contains(&format!("*{f}("))
            || header.contains(&format!("typedef struct {f} {{"));
        assert!(
            declared,
            "EdgeMoE.swift calls `{f}`, which edgemoe.h does not declare"
        );
    }
}
