//! The crate links and its error type formats.

#[test]
fn error_names_the_file() {
    let err = edgemoe::Error::invalid_file("x.gguf", "truncated header");
    assert!(err.to_string().contains("x.gguf"));
}
