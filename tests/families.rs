//! The forward pass of every family matches Hugging Face transformers (float32 reference):
//! logits at every position, router choices and weights, and the greedy continuation.

mod common;

use common::*;
use edgemoe::engine::{Model, RoutingTrace, Session};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A routing observer that can be read after the session is done with it.
#[derive(Clone, Default)]
struct SharedTrace(Arc<Mutex<RoutingTrace>>);

impl edgemoe::engine::RoutingObserver for SharedTrace {
    fn observe(&mut self, layer: usize, position: usize, routing: &edgemoe::engine::Routing) {
        self.0.lock().unwrap().observe(layer, position, routing);
    }
}

/// Checks one model file against the reference; returns the worst logit difference.
pub fn check_against_reference(path: &Path, family: &str, tol: f32, check_router: bool) -> f32 {
    let model = Arc::new(Model::load(path).unwrap());
    let reference = reference(family);
    let mut worst = 0f32;
    for p in &reference.prompts {
        let mut session = Session::new(model.clone(), Some(64)).unwrap();
        let trace = SharedTrace::default();
        session.set_observer(Some(Box::new(trace.clone())));
        let logits = session.eval(&p.ids, true).unwrap().to_vec();
        let vocab = model.config.vocab;
        for (t, want) in p.logits.iter().enumerate() {
            let d = max_abs_diff(&logits[t * vocab..(t + 1) * vocab], want);
            worst = worst.max(d);
            assert!(
                d <= tol,
                "{family} `{}` position {t}: max |Δlogit| {d}",
                p.text
            );
        }
        if check_router {
            let trace = trace.0.lock().unwrap();
            for (l, layer) in trace.layers.iter().enumerate() {
                for (t, r) in layer.iter().enumerate() {
                    assert_eq!(r.experts, p.router[l][t], "{family} layer {l} token {t}");
                    let dw = max_abs_diff(&r.weights, &p.router_weights[l][t]);
                    assert!(
                        dw < 1e-4,
                        "{family} router weights layer {l} token {t}: {dw}"
                    );
                    let dl = max_abs_diff(&r.logits, &p.router_logits[l][t]);
                    assert!(
                        dl < 1e-4,
                        "{family} router logits layer {l} token {t}: {dl}"
                    );
                }
            }
        }
        session.set_observer(None);
        // Greedy continuation, one token at a time through the KV cache.
        let mut next = argmax(&logits[(p.ids.len() - 1) * vocab..]);
        let mut greedy = vec![next];
        while greedy.len() < p.greedy.len() {
            let l = session.eval(&[next], false).unwrap();
            next = argmax(l);
            greedy.push(next);
        }
        assert_eq!(
            greedy, p.greedy,
            "{family} greedy continuation of `{}`",
            p.text
        );
    }
    worst
}

#[test]
fn stock_gguf_matches_transformers() {
    for family in FAMILIES {
        let worst =
            check_against_reference(&fixture(family).join("stock-f32.gguf"), family, 1e-3, true);
        eprintln!("{family}: stock f32 GGUF max |Δlogit| = {worst:.2e}");
    }
}

#[test]
fn batched_prompt_equals_token_by_token() {
    for family in FAMILIES {
        let model = Arc::new(Model::load(&fixture(family).join("stock-f32.gguf")).unwrap());
        let ids = &reference(family).prompts[0].ids;
        let mut batched = Session::new(model.clone(), Some(32)).unwrap();
        let all = batched.eval(ids, true).unwrap().to_vec();
        let mut single = Session::new(model.clone(), Some(32)).unwrap();
        let vocab = model.config.vocab;
        for (t, &id) in ids.iter().enumerate() {
            let l = single.eval(&[id], false).unwrap();
            assert_eq!(l, &all[t * vocab..(t + 1) * vocab], "{family} position {t}");
        }
    }
}

#[test]
fn lookahead_and_cancel_do_not_change_results() {
    for family in FAMILIES {
        let model = Arc::new(Model::load(&fixture(family).join("stock-f32.gguf")).unwrap());
        let ids = &reference(family).prompts[1].ids;
        let mut plain = Session::new(model.clone(), Some(32)).unwrap();
        let want = plain.eval(ids, true).unwrap().to_vec();
        let mut s = Session::new(model.clone(), Some(32)).unwrap();
        s.set_lookahead(2);
        // A cancel while idle reaches no later call.
        s.cancel_handle().cancel();
        assert_eq!(s.eval(ids, true).unwrap(), &want[..], "{family}");
        // A cancel inside a call stops it and leaves the cache as it was.
        s.reset();
        let cancel = s.cancel_handle();
        let r = s.cancellable(|s| {
            cancel.cancel();
            s.eval(ids, true).map(|_| ())
        });
        assert!(matches!(r, Err(edgemoe::Error::Cancelled)), "{r:?}");
        assert_eq!(
            s.position(),
            0,
            "a cancelled evaluation leaves the cache as it was"
        );
        assert_eq!(s.eval(ids, true).unwrap(), &want[..], "{family}");
        let p = s.prediction_stats();
        assert!(p.used.iter().sum::<u64>() > 0);
        assert!((0.0..=1.0).contains(&p.recall()) && (0.0..=1.0).contains(&p.precision()));
    }
}
