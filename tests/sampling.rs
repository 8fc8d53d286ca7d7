//! Sampler and stop-string tests.

use edgemoe::sampling::{Sampler, SamplerParams, StopOutcome, StopStrings};
use edgemoe::Error;

fn sampler(p: SamplerParams) -> Sampler {
    Sampler::new(p).unwrap()
}

fn hot(t: f32, seed: u64) -> SamplerParams {
    SamplerParams {
        temperature: t,
        seed,
        ..SamplerParams::default()
    }
}

/// Pseudo-random logits.
fn logits(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
        })
        .collect()
}

fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in l.iter().enumerate() {
        if x > l[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn greedy_is_argmax() {
    let mut s = sampler(SamplerParams::default());
    for seed in 0..50 {
        let l = logits(1000, seed);
        assert_eq!(s.sample(&l, &[]), argmax(&l));
    }
    // Ties go to the lowest id; NaN never wins and does not panic.
    assert_eq!(s.sample(&[1.0, 3.0, 3.0, 2.0], &[]), 1);
    assert_eq!(s.sample(&[f32::NAN, 0.5, f32::NAN, 0.7], &[]), 3);
    assert_eq!(s.sample(&[f32::NAN, f32::NAN], &[]), 0);
    assert_eq!(s.sample(&[], &[]), 0);
}

#[test]
fn top_k_one_and_tiny_top_p_are_greedy() {
    for seed in 0..50 {
        let l = logits(500, seed + 100);
        let mut k1 = sampler(SamplerParams {
            top_k: 1,
            ..hot(1.5, seed)
        });
        let mut p0 = sampler(SamplerParams {
            top_p: 1e-6,
            ..hot(1.5, seed)
        });
        let mut m1 = sampler(SamplerParams {
            min_p: 1.0,
            ..hot(1.5, seed)
        });
        for _ in 0..5 {
            assert_eq!(k1.sample(&l, &[]), argmax(&l));
            assert_eq!(p0.sample(&l, &[]), argmax(&l));
            assert_eq!(m1.sample(&l, &[]), argmax(&l));
        }
    }
}

#[test]
fn same_seed_same_tokens() {
    let p = SamplerParams {
        top_k: 40,
        top_p: 0.9,
        min_p: 0.02,
        repeat_penalty: 1.1,
        ..hot(0.8, 42)
    };
    let run = |p: SamplerParams| {
        let mut s = sampler(p);
        let mut hist = Vec::new();
        for step in 0..200 {
            let t = s.sample(&logits(300, step), &hist);
            hist.push(t);
        }
        hist
    };
    let a = run(p.clone());
    assert_eq!(a, run(p.clone()));
    assert_ne!(
        a,
        run(SamplerParams {
            seed: 43,
            ..p.clone()
        })
    );
    // reset() restarts the sequence.
    let mut s = sampler(p);
    let first: Vec<u32> = (0..20).map(|i| s.sample(&logits(300, i), &[])).collect();
    s.reset();
    let again: Vec<u32> = (0..20).map(|i| s.sample(&logits(300, i), &[])).collect();
    assert_eq!(first, again);
}

#[test]
fn draws_follow_the_softmax() {
    let probs = [0.5f32, 0.3, 0.2];
    let l: Vec<f32> = probs.iter().map(|p| p.ln() + 1.7).collect();
    let mut s = sampler(hot(1.0, 7));
    let mut counts = [0usize; 3];
    let n = 10_000;
    for _ in 0..n {
        counts[s.sample(&l, &[]) as usize] += 1;
    }
    for (c, p) in counts.iter().zip(probs) {
        let f = *c as f32 / n as f32;
        assert!((f - p).abs() < 0.02, "{counts:?}");
    }
    // Temperature 0.5 squares the odds: 25:9:4.
    let mut s = sampler(hot(0.5, 8));
    let mut counts = [0usize; 3];
    for _ in 0..n {
        counts[s.sample(&l, &[]) as usize] += 1;
    }
    let want = [25.0 / 38.0, 9.0 / 38.0, 4.0 / 38.0];
    for (c, p) in counts.iter().zip(want) {
        assert!((*c as f32 / n as f32 - p).abs() < 0.02, "{counts:?}");
    }
}

#[test]
fn min_p_and_top_k_cut() {
    // p ≈ [0.6, 0.3, 0.1]: min_p 0.4 keeps ids 0 and 1 (0.1 < 0.4·0.6), top-k 2 the same.
    let l: Vec<f32> = [0.6f32, 0.3, 0.1].iter().map(|p| p.ln()).collect();
    for p in [
        SamplerParams {
            min_p: 0.4,
            ..hot(1.0, 3)
        },
        SamplerParams {
            top_k: 2,
            ..hot(1.0, 3)
        },
        SamplerParams {
            top_p: 0.85,
            ..hot(1.0, 3)
        },
    ] {
        let mut s = sampler(p.clone());
        let mut seen = [0usize; 3];
        for _ in 0..3000 {
            seen[s.sample(&l, &[]) as usize] += 1;
        }
        assert_eq!(seen[2], 0, "{p:?}");
        assert!(seen[0] > 0 && seen[1] > 0, "{p:?}");
    }
}

#[test]
fn repetition_penalty_changes_the_choice() {
    let l = [2.0f32, 1.8, -1.0, -1.1];
    let mut plain = sampler(SamplerParams::default());
    assert_eq!(plain.sample(&l, &[0, 0, 0]), 0);
    let mut pen = sampler(SamplerParams {
        repeat_penalty: 1.3,
        ..SamplerParams::default()
    });
    // 2.0 / 1.3 < 1.8.
    assert_eq!(pen.sample(&l, &[0, 0, 0]), 1);
    // Applied once per distinct token, only within the window.
    assert_eq!(pen.sample(&l, &[0, 5, 9]), 1);
    let mut window = sampler(SamplerParams {
        repeat_penalty: 1.3,
        repeat_last_n: 2,
        ..SamplerParams::default()
    });
    assert_eq!(window.sample(&l, &[0, 3, 3]), 0);
    // Negative logits are multiplied: -1.0·1.3 < -1.1.
    let neg = [-1.0f32, -1.1];
    assert_eq!(pen.sample(&neg, &[0]), 1);
    // Out-of-range history ids are ignored.
    assert_eq!(pen.sample(&l, &[1000, 4_000_000_000]), 0);
}

#[test]
fn invalid_params_are_rejected() {
    let bad = [
        hot(-1.0, 0),
        hot(f32::NAN, 0),
        hot(f32::INFINITY, 0),
        SamplerParams {
            top_p: 0.0,
            ..SamplerParams::default()
        },
        SamplerParams {
            top_p: 1.5,
            ..SamplerParams::default()
        },
        SamplerParams {
            min_p: -0.1,
            ..SamplerParams::default()
        },
        SamplerParams {
            min_p: f32::NAN,
            ..SamplerParams::default()
        },
        SamplerParams {
            repeat_penalty: 0.0,
            ..SamplerParams::default()
        },
    ];
    for p in bad {
        assert!(
            matches!(Sampler::new(p.clone()), Err(Error::InvalidArgument(_))),
            "{p:?}"
        );
    }
}

#[test]
fn nan_logits_when_sampling() {
    let mut s = sampler(SamplerParams {
        top_p: 0.9,
        min_p: 0.1,
        top_k: 3,
        ..hot(1.0, 1)
    });
    for _ in 0..100 {
        let t = s.sample(&[f32::NAN, 1.0, f32::NAN, 1.0, f32::NEG_INFINITY], &[]);
        assert!(t == 1 || t == 3);
    }
    assert_eq!(s.sample(&[f32::NAN; 4], &[]), 0);
}

fn push_all(stops: &mut StopStrings, pieces: &[&str]) -> (String, Option<usize>) {
    let mut out = String::new();
    for p in pieces {
        let StopOutcome { emit, stop } = stops.push(p);
        out.push_str(&emit);
        if stop.is_some() {
            return (out, stop);
        }
    }
    out.push_str(&stops.finish());
    (out, None)
}

#[test]
fn stop_strings_split_across_pieces() {
    let mut s = StopStrings::new(["\n\nEND", "###"]);
    assert_eq!(
        s.push("hello\n"),
        StopOutcome {
            emit: "hello".into(),
            stop: None
        }
    );
    assert_eq!(s.push("\nEN").emit, "");
    assert_eq!(
        s.push("D more"),
        StopOutcome {
            emit: "".into(),
            stop: Some(0)
        }
    );
    assert_eq!(s.push("after"), StopOutcome::default());

    // A false start is released once it cannot match any more.
    let mut s = StopStrings::new(["\n\nEND"]);
    assert_eq!(
        push_all(&mut s, &["a\n", "\nEx", "tra"]),
        ("a\n\nExtra".into(), None)
    );

    // The earliest match wins, whichever string it is.
    let mut s = StopStrings::new(["world", "lo w"]);
    assert_eq!(
        push_all(&mut s, &["hel", "lo", " wor", "ld"]),
        ("hel".into(), Some(1))
    );

    // Multi-byte characters split anywhere stay whole.
    let mut s = StopStrings::new(["🙂!"]);
    assert_eq!(
        push_all(&mut s, &["é🙂", "🙂", "!x"]),
        ("é🙂".into(), Some(0))
    );
    let mut s = StopStrings::new(["🙂!"]);
    assert_eq!(push_all(&mut s, &["é🙂", "🙂"]), ("é🙂🙂".into(), None));

    // No stop strings: everything passes straight through.
    let mut s = StopStrings::new(Vec::<String>::new());
    assert_eq!(s.push("abc").emit, "abc");
}
