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
