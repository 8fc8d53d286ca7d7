//! A memory budget streams experts from storage and gives the same tokens as a resident run;
//! a budget too small is a typed error stating the minimum; the budget can change mid-run.

mod common;

use edgemoe::engine::{Backend, LoadOptions, Model, Session};
use std::path::PathBuf;
use std::sync::Arc;

fn demo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/demo.gguf")
}

fn greedy(model: &Arc<Model>, n: usize, between: impl FnMut(usize)) -> Vec<u32> {
    let mut s = Session::new(model.clone(), Some(64)).unwrap();
    s.set_lookahead(1);
    common::greedy_after_romeo(model, &mut s, n, between)
}

fn load(budget: u64, backend: Backend) -> edgemoe::Result<Model> {
    Model::load_with(
        &demo(),
        LoadOptions {
            memory_budget: Some(budget),
            backend,
            context_length: Some(64),
            ..Default::default()
        },
    )
}

#[test]
fn budget_too_small_states_the_minimum() {
    let err = load(1 << 20, Backend::Auto)
        .err()
        .expect("1 MiB cannot hold the demo model");
    match err {
        edgemoe::Error::BudgetTooSmall { needed, budget, .. } => {
            assert_eq!(budget, 1 << 20);
            assert!(needed > budget);
            // The stated minimum works.
            load(needed, Backend::Auto).unwrap();
            assert!(matches!(
                load(needed - 1, Backend::Auto),
                Err(edgemoe::Error::BudgetTooSmall { .. })
            ));
        }
        other => panic!("expected BudgetTooSmall, got {other}"),
    }
}

#[test]
fn streamed_under_budget_equals_resident_and_survives_budget_changes() {
    let resident = Arc::new(Model::load(&demo()).unwrap());
    let want = greedy(&resident, 24, |_| {});
    for backend in [Backend::Pread, Backend::Mmap, Backend::IoUring] {
        let min = match load(0, backend) {
            Err(edgemoe::Error::BudgetTooSmall { needed, .. }) => needed,
            other => panic!("{other:?}", other = other.err()),
        };
        let model = Arc::new(load(min + (1 << 20), backend).unwrap());
        assert!(model.streamed().is_some());
        let m = model.clone();
        let got = greedy(&model, 24, |i| match i {
            8 => m.set_memory_budget(min).unwrap(),
            16 => m.set_memory_budget(min + (4 << 20)).unwrap(),
            _ => {}
        });
        assert_eq!(got, want, "{backend:?}");
        assert!(model.set_memory_budget(min - 1).is_err());
        let stats = model.streamed().unwrap().stats();
        assert!(
            stats.bytes_read > 0 && stats.gets > 0,
            "{backend:?}: {stats:?}"
        );
    }
}

/// A model inside a larger file at an unaligned offset (an Android asset, a content URI's
/// descriptor) streams under a budget with every backend and gives the resident run's tokens.
#[test]
fn streamed_from_a_descriptor_region_equals_resident() {
    use std::io::Write;
    let resident = Arc::new(Model::load(&demo()).unwrap());
    let want = greedy(&resident, 16, |_| {});
    let bytes = std::fs::read(demo()).unwrap();
    let offset = 12_345u64;
    let path = std::env::temp_dir().join(format!("edgemoe-region-{}.bin", std::process::id()));
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&vec![0x5a; offset as usize]).unwrap();
    f.write_all(&bytes).unwrap();
    f.write_all(&[0xa5; 777]).unwrap();
    drop(f);
    for backend in [Backend::Pread, Backend::Mmap, Backend::IoUring] {
        let model = Model::load_region(
            std::fs::File::open(&path).unwrap(),
            offset,
            bytes.len() as u64,
            LoadOptions {
                memory_budget: Some(6 << 20),
                backend,
                context_length: Some(64),
                ..Default::default()
            },
        )
        .unwrap();
        let model = Arc::new(model);
        let streamed = model.streamed().expect("a budget streams experts");
        assert!(
            streamed.slots() < 32,
            "{backend:?}: the pool must not hold every expert"
        );
        assert_eq!(greedy(&model, 16, |_| {}), want, "{backend:?}");
        assert!(streamed.stats().bytes_read > 0);
    }
    std::fs::remove_file(&path).unwrap();
}

/// A session larger than the context the budget reserved is refused, naming the context the
/// budget allows; no context asks for exactly that one. Without a budget any context the
/// memory allows is taken, and one it cannot hold is an error, not an abort.
#[test]
fn a_session_never_exceeds_the_budgets_context() {
    let min = match load(0, Backend::Pread) {
        Err(edgemoe::Error::BudgetTooSmall { needed, .. }) => needed,
        other => panic!("{other:?}", other = other.err()),
    };
    let model = Arc::new(load(min + (1 << 20), Backend::Pread).unwrap());
    assert_eq!(model.budget().unwrap().context_length, 64);
    match Session::new(model.clone(), Some(65)) {
        Err(edgemoe::Error::BudgetTooSmall {
            needed,
            budget,
            detail,
        }) => {
            assert!(needed > budget);
            assert!(detail.contains("at most 64 tokens"), "{detail}");
        }
        other => panic!("{:?}", other.err()),
    }
    assert_eq!(Session::new(model.clone(), None).unwrap().capacity(), 64);
    assert_eq!(Session::new(model, Some(64)).unwrap().capacity(), 64);
    let resident = Arc::new(Model::load(&demo()).unwrap());
    assert!(matches!(
        Session::new(resident.clone(), Some(1 << 40)),
        Err(edgemoe::Error::InvalidArgument(_))
    ));
    assert!(Session::new(resident, Some(65)).is_ok());
}
