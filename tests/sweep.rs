//! `edgemoe bench --sweep` on the demo model: every run carries the limits measured next to it,
//! and its ideal, serial floor and hidden share follow from them (the sweep tables of
//! docs/benchmarks/streaming-budget.md are read off these fields).

use std::path::PathBuf;
use std::process::Command;

fn field(run: &serde_json::Value, name: &str) -> f64 {
    run[name]
        .as_f64()
        .unwrap_or_else(|| panic!("{name} missing in {run}"))
}

#[test]
fn sweep_rows_carry_their_own_limits() {
    let out = std::env::temp_dir().join(format!("emoe-sweep-{}", std::process::id()));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(env!("CARGO_BIN_EXE_edgemoe"))
        .args(["bench", "-m"])
        .arg(root.join("models/demo.gguf"))
        .args(["--sweep", "50,100", "-n", "8", "-t", "1"])
        .args(["--sweep-backends", "pread", "--sweep-predictors", "none"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("sweep.json")).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    // One raw pass before the first run and one after each run.
    let passes = report["raw_read_passes"].as_array().unwrap();
    assert_eq!(passes.len(), runs.len() + 1);
    for (i, run) in runs.iter().enumerate() {
        let resident = field(run, "resident_ms_per_token");
        let raw = field(run, "raw_read_bandwidth");
        assert!(resident > 0.0 && raw > 0.0, "{run}");
        let around = (passes[i].as_f64().unwrap() + passes[i + 1].as_f64().unwrap()) / 2.0;
        assert!((raw - around).abs() <= 1e-6 * around, "{raw} vs {around}");
        let read_ms = field(run, "needed_bytes_per_token") / raw * 1e3;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        assert!(close(
            field(run, "ideal_ms_per_token"),
            resident.max(read_ms)
        ));
        assert!(close(field(run, "serial_ms_per_token"), resident + read_ms));
        assert!(read_ms > 0.0, "a cold cache reads: {run}");
        let hidden = (resident + read_ms - field(run, "ms_per_token")) / resident.min(read_ms);
        assert!(close(field(run, "hidden_share"), hidden));
    }
    let md = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    assert!(md.contains("| serial ms | hidden |"), "{md}");
    assert!(out.join("sweep.csv").exists());
    std::fs::remove_dir_all(&out).ok();
}
