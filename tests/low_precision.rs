//! Lower precision on a miss (HOBBIT): files with low-precision expert copies run as before
//! unless the option is on; with it on, missed low-weight experts are read from their copies,
//! and the result equals a reference that computes exactly those experts at the low type.

mod common;

use common::*;
use edgemoe::convert::{convert, ConvertOptions};
use edgemoe::engine::experts::{ResidentExperts, LOW_PRECISION_TYPE_KEY};
use edgemoe::engine::{
    ExpertDirectory, ExpertSource, ExpertView, Model, ModelConfig, Precision, Session,
};
use edgemoe::format::GgufFile;
use edgemoe::stream::{BackendKind, PolicyKind, StreamConfig, StreamedExperts};
use edgemoe::tensor::GgmlType;
use edgemoe::Error;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

const FAMILY: &str = "mixtral";
const GREEDY: usize = 8;
const BACKENDS: [BackendKind; 3] = [BackendKind::IoUring, BackendKind::Pread, BackendKind::Mmap];

/// The mixtral fixture converted to f32, without (`low = None`) or with low-precision copies.
fn converted(low: Option<GgmlType>) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap();
    let dir = std::env::temp_dir().join(format!("edgemoe-lowprec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let name = low.map_or("plain".to_string(), |t| t.to_string());
    let out = dir.join(format!("{FAMILY}-f32-{name}.gguf"));
    if !out.exists() {
        let opts = ConvertOptions {
            matrix_type: Some(GgmlType::F32),
            low_expert_type: low,
            progress: None,
            ..Default::default()
        };
        let report = convert(&fixture(FAMILY).join("hf"), &out, &opts).unwrap();
        assert_eq!(report.low_expert_bytes > 0, low.is_some());
    }
    out
}

/// Logits of every prompt position and of a greedy continuation, for every reference prompt.
fn run(model: &Arc<Model>) -> Vec<Vec<f32>> {
    let vocab = model.config.vocab;
    reference(FAMILY)
        .prompts
        .iter()
        .map(|p| {
            let mut s = Session::new(model.clone(), Some(64)).unwrap();
            let mut logits = s.eval(&p.ids, true).unwrap().to_vec();
            let mut next = argmax(&logits[(p.ids.len() - 1) * vocab..]);
            for _ in 0..GREEDY {
                let l = s.eval(&[next], false).unwrap();
                logits.extend_from_slice(l);
                next = argmax(l);
            }
            logits
        })
        .collect()
}

fn parts(path: &Path) -> (Arc<GgufFile>, ModelConfig, Arc<ExpertDirectory>) {
    let file = Arc::new(GgufFile::open(path).unwrap());
    let config = ModelConfig::from_gguf(&file.header, path).unwrap();
    let directory = Arc::new(ExpertDirectory::from_gguf(&file.header, &config, path).unwrap());
    (file, config, directory)
}

/// A streamed model with a pool of `slots` experts (pread backend).
fn streamed(path: &Path, slots: u64, threshold: Option<f32>) -> (Arc<Model>, Arc<StreamedExperts>) {
    streamed_with(path, slots, threshold, BackendKind::Pread)
}

fn streamed_with(
    path: &Path,
    slots: u64,
    threshold: Option<f32>,
    backend: BackendKind,
) -> (Arc<Model>, Arc<StreamedExperts>) {
    let (file, config, directory) = parts(path);
    let cfg = StreamConfig {
        pool_bytes: slots * edgemoe::stream::slot_bytes(&directory),
        backend,
        policy: PolicyKind::Lru,
        queue_depth: 8,
        mlock: false,
        ..Default::default()
    };
    let src =
        Arc::new(StreamedExperts::open(path, directory.clone(), config.n_layers, &cfg).unwrap());
    let mut model = Model::from_parts(file, config, directory, Box::new(src.clone())).unwrap();
    model.low_precision_threshold = threshold;
    (Arc::new(model), src)
}

/// Every expert served from the mapped file, but reported as never cached: the forward pass
/// takes the low path wherever the routing allows it.
struct NeverCached(ResidentExperts);

impl ExpertSource for NeverCached {
    fn has_low_precision(&self) -> bool {
        self.0.has_low_precision()
    }
    fn is_cached(&self, _: usize, _: usize) -> bool {
        false
    }
    fn get(
        &self,
        layer: usize,
        expert: usize,
        precision: Precision,
        cancel: &AtomicBool,
    ) -> edgemoe::Result<ExpertView<'_>> {
        self.0.get(layer, expert, precision, cancel)
    }
    fn name(&self) -> &'static str {
        "never-cached"
    }
}

#[test]
fn copies_are_stored_and_change_nothing_unless_asked_for() {
    let plain = converted(None);
    let low = converted(Some(GgmlType::Q4_0));
    let (file, config, dir) = parts(&low);
    assert_eq!(dir.low_precision_type(), Some(GgmlType::Q4_0));
    assert!(file.get(LOW_PRECISION_TYPE_KEY).is_some());
    let t = file.tensor("blk.1.ffn_down.7.low.weight").unwrap();
    assert_eq!(t.ty, GgmlType::Q4_0);
    // Packed like the experts: gate, up, down of one copy back to back, after every expert.
    for l in 0..config.n_layers {
        for e in 0..config.n_experts {
            let hi = dir.get_at(l, e, Precision::High).unwrap();
            let lo = dir.get_at(l, e, Precision::Low).unwrap();
            assert!(lo.is_packed());
            assert!(lo.bytes() < hi.bytes());
            assert!(lo.span().0 >= dir.iter().map(|x| x.span().1).max().unwrap());
        }
    }
    let (_, _, plain_dir) = parts(&plain);
    assert_eq!(plain_dir.low_precision_type(), None);
    assert_eq!(plain_dir.total_bytes(), dir.total_bytes());

    // Resident: identical with and without copies (and the option cannot fire).
    let want = run(&Arc::new(Model::load(&plain).unwrap()));
    assert_eq!(run(&Arc::new(Model::load(&low).unwrap())), want);
    let opts = edgemoe::engine::LoadOptions {
        low_precision_threshold: Some(1.0),
        ..Default::default()
    };
    assert_eq!(run(&Arc::new(Model::load_with(&low, opts).unwrap())), want);
    // The budget split does not count the copies as resident weights.
    let a = edgemoe::engine::model::preflight(&plain, 64 << 20, Some(64)).unwrap();
    let b = edgemoe::engine::model::preflight(&low, 64 << 20, Some(64)).unwrap();
    assert_eq!(a.resident, b.resident);

    // Streamed, option off and threshold 0: identical to the resident run.
    let n_used = config.n_experts_used as u64;
    for threshold in [None, Some(0.0)] {
        let (model, src) = streamed(&low, n_used, threshold);
        assert_eq!(run(&model), want, "threshold {threshold:?}");
        let st = src.stats();
        assert_eq!((st.low_gets, st.low_reads, st.low_bytes_saved), (0, 0, 0));
    }

    // Converting a file with copies again keeps them only when asked to.
    let again = low.with_extension("again.gguf");
    let opts = ConvertOptions {
        progress: None,
        ..Default::default()
    };
    convert(&low, &again, &opts).unwrap();
    let (_, _, d) = parts(&again);
    assert_eq!(d.low_precision_type(), None);
    assert_eq!(run(&Arc::new(Model::load(&again).unwrap())), want);
}

#[test]
fn misses_with_small_weights_run_at_low_precision() {
    let low = converted(Some(GgmlType::Q4_0));
    let (file, config, dir) = parts(&low);
    let high = run(&Arc::new(Model::load(&low).unwrap()));
    // A pool of exactly the experts one token uses: with 2 layers, every expert a layer needs
    // is missing when the layer starts, as in the never-cached reference.
    let (model, src) = streamed(&low, config.n_experts_used as u64, Some(1.0));
    let got = run(&model);
    let st = src.stats();
    eprintln!("{st:?}");
    assert!(st.low_gets > 0 && st.low_reads > 0 && st.low_bytes_saved > 0);
    assert!(
        st.low_gets < st.gets,
        "top-1 experts stay at high precision"
    );
    assert_eq!(st.hits + st.preload_hits + st.misses, st.gets);
    // Exactly the reference that computes the same experts from the mapped low copies.
    let mut never_cached = Model::from_parts(
        file.clone(),
        config,
        dir.clone(),
        Box::new(NeverCached(ResidentExperts::new(file, dir))),
    )
    .unwrap();
    never_cached.low_precision_threshold = Some(1.0);
    assert_eq!(got, run(&Arc::new(never_cached)));
    // It changed the logits by a q4_0 amount. Compared on the prompts only: greedy
    // continuations may pick other tokens. (Random tiny models are far more sensitive to
    // quantisation than trained ones; see docs/benchmarks/accuracy.md.)
    let vocab = model.config.vocab;
    let (mut worst, mut sum, mut count) = (0f32, 0f64, 0usize);
    for ((g, h), p) in got.iter().zip(&high).zip(&reference(FAMILY).prompts) {
        assert!(g.iter().all(|v| v.is_finite()));
        let n = p.ids.len() * vocab;
        worst = worst.max(max_abs_diff(&g[..n], &h[..n]));
        sum += g[..n]
            .iter()
            .zip(&h[..n])
            .map(|(a, b)| (a - b).abs() as f64)
            .sum::<f64>();
        count += n;
    }
    let mean = sum / count as f64;
    eprintln!("prompt logits vs high precision: max |Δ| {worst}, mean |Δ| {mean}");
    assert!(worst > 0.0 && mean < 0.05 && worst < 0.5, "{worst} {mean}");
}

#[test]
fn bad_options_are_typed_errors() {
    let plain = converted(None);
    let opts = edgemoe::engine::LoadOptions {
        low_precision_threshold: Some(0.5),
        ..Default::default()
    };
    assert!(matches!(
        Model::load_with(&plain, opts),
        Err(Error::InvalidArgument(_))
    ));
    let low = converted(Some(GgmlType::Q4_0));
    for f in [f32::NAN, -0.1, 1.5] {
        let opts = edgemoe::engine::LoadOptions {
            low_precision_threshold: Some(f),
            ..Default::default()
        };
        assert!(matches!(
            Model::load_with(&low, opts),
            Err(Error::InvalidArgument(_))
        ));
    }
    // K-quants need rows of 256 values; the fixture's are 64.
    let out = std::env::temp_dir().join(format!("edgemoe-lowprec-bad-{}.gguf", std::process::id()));
    let opts = ConvertOptions {
        low_expert_type: Some(GgmlType::Q2K),
        progress: None,
        ..Default::default()
    };
    assert!(matches!(
        convert(&fixture(FAMILY).join("hf"), &out, &opts),
        Err(Error::InvalidArgument(_))
    ));
    let _ = std::fs::remove_file(out);
}

#[test]
fn token_by_token_perplexity_equals_the_batched_one() {
    use edgemoe::engine::perplexity::perplexity_with;
    let model = Arc::new(Model::load(&converted(None)).unwrap());
    let ids: Vec<u32> = reference(FAMILY)
        .prompts
        .iter()
        .flat_map(|p| p.ids.iter().copied())
        .collect();
    let ctx = 8.min(ids.len());
    let batched = perplexity_with(&model, &ids, ctx, 4, false, &mut |_, _| {}).unwrap();
    let stepped = perplexity_with(&model, &ids, ctx, 4, true, &mut |_, _| {}).unwrap();
    assert_eq!(batched, stepped);
    assert!(batched.predictions > 0);
}

/// With the router look-ahead preloading, experts the rule will read at low precision are
/// preloaded as their low copies: low reads happen ahead of the layer, and the logits stay
/// finite and within the low-precision bound of the high-precision run.
#[test]
fn look_ahead_preloads_low_copies() {
    use edgemoe::engine::predictor::{PredictionOptions, PredictorKind};
    let low = converted(Some(GgmlType::Q4_0));
    let (_, config, _) = parts(&low);
    let high = run(&Arc::new(Model::load(&low).unwrap()));
    let (model, src) = streamed(&low, 2 * config.n_experts_used as u64, Some(1.0));
    let mut model = Arc::try_unwrap(model).ok().unwrap();
    model
        .set_prediction_defaults(PredictionOptions {
            predictor: PredictorKind::LookAhead,
            ..Default::default()
        })
        .unwrap();
    let model = Arc::new(model);
    let got = run(&model);
    let st = src.stats();
    eprintln!("{st:?}");
    assert!(
        st.preloads > 0 && st.low_reads > 0 && st.low_gets > 0,
        "{st:?}"
    );
    let vocab = model.config.vocab;
    for ((g, h), p) in got.iter().zip(&high).zip(&reference(FAMILY).prompts) {
        let n = p.ids.len() * vocab;
        assert!(g.iter().all(|v| v.is_finite()));
        assert!(max_abs_diff(&g[..n], &h[..n]) < 0.5);
    }
}

#[test]
fn low_copies_share_pool_slots() {
    BACKENDS
        .into_iter()
        .for_each(low_copies_share_pool_slots_with);
}

/// The fixture with q4_0 copies, streamed at threshold 1 through a pool of `pools_per_token`
/// times the slots one token's experts of a layer need.
fn with_low_copies(
    pools_per_token: usize,
    backend: BackendKind,
) -> (PathBuf, ModelConfig, Arc<Model>, Arc<StreamedExperts>) {
    let low = converted(Some(GgmlType::Q4_0));
    let (_, config, _) = parts(&low);
    let slots = (pools_per_token * config.n_experts_used) as u64;
    let (model, src) = streamed_with(&low, slots, Some(1.0), backend);
    (low, config, model, src)
}

fn low_copies_share_pool_slots_with(backend: BackendKind) {
    let (low, config, _model, src) = with_low_copies(1, backend);
    let slots = config.n_experts_used;
    let per_slot = src.low_copies_per_slot();
    assert!(
        per_slot > 1,
        "q4_0 copies of f32 experts fit several to a slot"
    );
    let never = AtomicBool::new(false);
    // Every expert of layer 0 at low precision, one after the other: the pool keeps as many
    // as fit, several to a slot.
    let n = config.n_experts.min(slots * per_slot);
    for e in 0..n {
        let v = src.get(0, e, Precision::Low, &never).unwrap();
        drop(v);
    }
    let cached = (0..n)
        .filter(|&e| src.is_ready(0, e, Precision::Low))
        .count();
    assert!(
        cached > slots,
        "{backend:?}: {cached} low copies cached in {slots} slots"
    );
    // A high-precision copy takes a whole slot, evicting the low copies in it, and the
    // result is the same bytes as the mapped file's.
    let file = GgufFile::open(&low).unwrap();
    let resident = ResidentExperts::new(Arc::new(file), parts(&low).2);
    for e in 0..config.n_experts {
        let got = src.get(1, e, Precision::High, &never).unwrap();
        let want = resident.get(1, e, Precision::High, &never).unwrap();
        assert_eq!(got.down.data, want.down.data, "{backend:?}: expert {e}");
        let got_low = src.get(0, e, Precision::Low, &never).unwrap();
        let want_low = resident.get(0, e, Precision::Low, &never).unwrap();
        assert_eq!(
            got_low.gate.data, want_low.gate.data,
            "{backend:?}: expert {e}"
        );
    }
    assert_eq!(src.stats().read_errors, 0);
}

/// Lowering the pool while low copies share its slots evicts down to the new size (no
/// more copies cached than its slots hold), raising it again works, and generation goes on.
#[test]
fn resizing_a_pool_of_shared_slots_mid_generation() {
    BACKENDS
        .into_iter()
        .for_each(resizing_a_pool_of_shared_slots_with);
}

fn resizing_a_pool_of_shared_slots_with(backend: BackendKind) {
    let (_, config, model, src) = with_low_copies(3, backend);
    let used = config.n_experts_used;
    let slot = src.slot_bytes();
    let per_slot = src.low_copies_per_slot();
    let cached = |precision| {
        (0..config.n_layers)
            .flat_map(|l| (0..config.n_experts).map(move |e| (l, e)))
            .filter(|&(l, e)| src.is_ready(l, e, precision))
            .count()
    };
    let vocab = model.config.vocab;
    let mut s = Session::new(model.clone(), Some(64)).unwrap();
    let prompt = &reference(FAMILY).prompts[0].ids;
    let mut next = argmax(&s.eval(prompt, false).unwrap()[..vocab]);
    for step in 0..16 {
        match step {
            5 => {
                src.set_pool_bytes(used as u64 * slot).unwrap();
                assert_eq!(src.slots(), used);
                let (high, lowc) = (cached(Precision::High), cached(Precision::Low));
                assert!(
                    high + lowc.div_ceil(per_slot) <= used,
                    "{high} high, {lowc} low"
                );
            }
            11 => src.set_pool_bytes(3 * used as u64 * slot).unwrap(),
            _ => {}
        }
        let logits = s.eval(&[next], false).unwrap();
        assert!(logits.iter().all(|v| v.is_finite()));
        next = argmax(logits);
    }
    let st = src.stats();
    assert_eq!(st.read_errors, 0);
    assert!(st.low_gets > 0, "{st:?}");
    assert_eq!(src.slots(), 3 * used);
}
