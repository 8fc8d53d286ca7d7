//! Expert prediction: `edgemoe profile`'s table survives a trip through a model file, a
//! malformed table is a typed error, and every predictor leaves streamed output bit-identical
//! to the resident run.

mod common;

use edgemoe::engine::predictor::write_model_with_stats;
use edgemoe::engine::profile::profile;
use edgemoe::engine::{
    Backend, ExpertStats, LoadOptions, Model, PredictionOptions, PredictorKind, Session,
};
use edgemoe::format::{GgufFile, GgufValue, GgufWriter, TensorSpec};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

fn demo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/demo.gguf")
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("edgemoe-predict-{}-{name}", std::process::id()))
}

/// The demo model profiled on a little text of its own kind, written once per process.
fn profiled() -> &'static (PathBuf, ExpertStats) {
    static ONCE: OnceLock<(PathBuf, ExpertStats)> = OnceLock::new();
    ONCE.get_or_init(|| {
        let model = Arc::new(Model::load(&demo()).unwrap());
        let text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\n\
                    Speak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than \
                    to famish?\n\nAll:\nResolved. resolved.\n"
            .repeat(6);
        let ids = model.tokenizer().unwrap().encode(&text, false).unwrap();
        let mut windows = 0;
        let stats = profile(&model, &ids, 128, &mut |done, total| {
            assert!(done <= total);
            windows = done;
        })
        .unwrap();
        assert_eq!(windows, ids.len().div_ceil(128));
        assert_eq!(stats.tokens(), ids.len() as u64);
        let out = tmp("profiled.gguf");
        write_model_with_stats(&demo(), &out, &stats).unwrap();
        (out, stats)
    })
}

#[test]
fn profile_table_round_trips_through_the_model_file() {
    let (path, stats) = profiled();
    let model = Model::load(path).unwrap();
    let back = model.expert_stats.as_deref().expect("the copy has a table");
    assert_eq!(back, stats);
    let (k1, k2) = back.keys();
    assert!(k1 > 0 && k2 >= k1, "{k1} {k2}");
    // Every tensor is copied byte for byte at the same place.
    let (a, b) = (
        GgufFile::open(&demo()).unwrap(),
        GgufFile::open(path).unwrap(),
    );
    assert_eq!(a.header.tensors.len(), b.header.tensors.len());
    for t in &a.header.tensors {
        let u = b.tensor(&t.name).unwrap();
        assert_eq!(a.data(t), b.data(u), "{}", t.name);
        assert_eq!(
            t.offset - a.header.data_offset,
            u.offset - b.header.data_offset
        );
    }
    // Writing over the input is refused.
    assert!(write_model_with_stats(path, path, stats).is_err());
    // Probabilities of a layer sum to k whatever the key.
    let mut p = vec![0f32; back.n_experts()];
    back.predict(2, Some(&[0, 1]), Some(&[6, 7]), &mut p);
    assert!((p.iter().sum::<f32>() - 2.0).abs() < 1e-4, "{p:?}");
}

/// A copy of `src` with metadata `key` replaced by `value`.
fn with_metadata(src: &Path, out: &Path, key: &str, value: GgufValue) {
    let f = GgufFile::open(src).unwrap();
    let mut meta = f.header.metadata.clone();
    for (k, v) in &mut meta {
        if k == key {
            *v = value.clone();
        }
    }
    let specs = f
        .header
        .tensors
        .iter()
        .map(|t| TensorSpec {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.ty,
        })
        .collect();
    let mut w = GgufWriter::create(out, &meta, specs).unwrap();
    for t in &f.header.tensors {
        w.write_tensor(f.data(t)).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn malformed_tables_are_typed_errors() {
    let (path, _) = profiled();
    let bad = tmp("bad.gguf");
    for (key, value) in [
        (
            "edgemoe.predictor.layer.1.ctx1",
            GgufValue::u32_array([5, 1, 0, 1, 9, 1]),
        ),
        (
            "edgemoe.predictor.layer.2.ctx2",
            GgufValue::u32_array([3, 2, 0]),
        ),
        (
            "edgemoe.predictor.layer.0.marginal",
            GgufValue::u32_array([1, 2]),
        ),
        ("edgemoe.predictor.experts_used", GgufValue::U32(99)),
        ("edgemoe.predictor.format", GgufValue::String("x/1".into())),
    ] {
        with_metadata(path, &bad, key, value);
        match Model::load(&bad) {
            Err(edgemoe::Error::InvalidFile { reason, .. }) => {
                assert!(reason.contains("edgemoe.predictor"), "{reason}")
            }
            other => panic!("{key}: {:?}", other.err()),
        }
    }
    std::fs::remove_file(&bad).ok();
    // The statistics predictor needs a table.
    let plain = Arc::new(Model::load(&demo()).unwrap());
    let mut s = Session::new(plain, Some(8)).unwrap();
    let stats = PredictionOptions {
        predictor: PredictorKind::Stats,
        ..Default::default()
    };
    assert!(matches!(
        s.set_prediction(stats),
        Err(edgemoe::Error::InvalidArgument(_))
    ));
    let err = Model::load_with(
        &demo(),
        LoadOptions {
            prediction: stats,
            ..Default::default()
        },
    );
    assert!(err.is_err());
}

fn greedy(model: &Arc<Model>, n: usize) -> (Vec<u32>, Session) {
    let mut s = Session::new(model.clone(), Some(64)).unwrap();
    let out = common::greedy_after_romeo(model, &mut s, n, |_| {});
    (out, s)
}

#[test]
fn every_predictor_is_bit_identical_to_resident() {
    let (path, _) = profiled();
    let resident = Arc::new(Model::load(path).unwrap());
    let (want, _) = greedy(&resident, 24);
    let cases = [
        (PredictorKind::Stats, 1, None, false),
        (PredictorKind::Stats, 2, Some(3), false),
        (PredictorKind::LookAhead, 1, Some(3), true),
        (PredictorKind::LookAhead, 2, None, false),
        (PredictorKind::None, 1, None, false),
    ];
    for (predictor, depth, preload_count, refine) in cases {
        for backend in [Backend::Pread, Backend::IoUring] {
            let prediction = PredictionOptions {
                predictor,
                depth,
                preload_count,
                score_all: true,
                refine,
            };
            let model = Arc::new(
                Model::load_with(
                    path,
                    LoadOptions {
                        memory_budget: Some(6 << 20),
                        backend,
                        context_length: Some(64),
                        prediction,
                        ..Default::default()
                    },
                )
                .unwrap(),
            );
            let streamed = model.streamed().expect("a budget streams experts").clone();
            assert!(streamed.slots() < 32);
            let (got, s) = greedy(&model, 24);
            assert_eq!(got, want, "{prediction:?} {backend:?}");
            for kind in PredictorKind::ALL {
                let p = s.prediction_stats_for(kind).unwrap();
                // Scored for every predicted layer (all but the first).
                assert_eq!(p.used[0], 0);
                assert!(p.used[1..].iter().all(|&u| u > 0), "{kind:?} {p:?}");
                assert!(p.correct.iter().zip(&p.used).all(|(c, u)| c <= u));
                assert!((0.0..=1.0).contains(&p.recall()));
                let per_token = preload_count.unwrap_or(2) as u64;
                // Per evaluation and predicted layer: `count` experts per token from each of
                // `depth` layers before, plus the refinement's.
                let evals = 25 * 8; // a prompt of at most 8 tokens, 24 decoded
                assert!(
                    p.predicted[1] <= per_token * evals * (depth as u64 + 1),
                    "{p:?}"
                );
            }
            let st = streamed.stats();
            assert!(st.gets > 0 && st.read_errors == 0, "{st:?}");
        }
    }
}

/// With room for every expert, the look-ahead's preloads and fill-ahead go to empty slots and
/// evict nothing: fetches are served by preloads, none is wasted (a prediction may still be
/// dropped when its layer comes before room for its read), and
/// greedy output stays bit-identical to resident for every streaming backend. At a small
/// budget, budget-aware preloading may drop predictions but never changes the output.
#[test]
fn lookahead_with_fill_ahead_is_bit_identical_and_served_by_preloads() {
    let resident = Arc::new(Model::load(&demo()).unwrap());
    let (want, _) = greedy(&resident, 24);
    for backend in [Backend::IoUring, Backend::Pread, Backend::Mmap] {
        for budget in [None, Some(6 << 20)] {
            let prediction = PredictionOptions {
                predictor: PredictorKind::LookAhead,
                ..Default::default()
            };
            let opts = LoadOptions {
                memory_budget: budget.or(Some(u64::MAX / 8)),
                backend,
                context_length: Some(64),
                prediction,
                ..Default::default()
            };
            let model = Arc::new(Model::load_with(&demo(), opts).unwrap());
            let streamed = model.streamed().expect("a budget streams experts").clone();
            let (got, _) = greedy(&model, 24);
            assert_eq!(got, want, "{backend:?} {budget:?}");
            let st = streamed.stats();
            assert_eq!(st.hits + st.preload_hits + st.misses, st.gets, "{st:?}");
            assert!(
                st.read_errors == 0 && st.preload_hits > 0,
                "{backend:?}: {st:?}"
            );
            if budget.is_none() {
                assert_eq!(st.wasted_preloads, 0, "{backend:?}: {st:?}");
                if backend != Backend::Mmap {
                    assert!(st.fill_reads > 0, "{backend:?}: {st:?}");
                }
            }
        }
    }
}
