//! Expert prediction: which experts the next layers will use, so they can be preloaded while
//! the current layer computes.
//!
//! Two predictors:
//! - **router look-ahead** ([`PredictorKind::LookAhead`]): layer `m`'s router applied to the
//!   hidden state entering layer `l`'s experts (`m > l`); needs no extra data;
//! - **EdgeMoE statistics** ([`PredictorKind::Stats`]): `P(expert of layer l | experts chosen
//!   in layers l-1 and l-2)`, counted by `edgemoe profile` on calibration text
//!   ([`ExpertStats`]) and stored in the model file.
//!
//! # The table in a GGUF file
//!
//! Under `edgemoe.predictor.*` (all counts are calibration tokens):
//! - `format`: the string [`FORMAT`];
//! - `tokens` (u64): tokens counted; `experts_used` (u32): `k`, the experts per token per layer
//!   (the width of one layer's part of a key); `calibration` (string, optional): what was run;
//! - `layer.{L}.marginal` (u32 array, one per expert): tokens of layer `L` routed to each expert;
//! - `layer.{L}.ctx1` (`L >= 1`) and `layer.{L}.ctx2` (`L >= 2`) (u32 arrays): the conditional
//!   counts given the experts of the previous one or two layers, as a run of records
//!   `[n, m, key..., (expert, count) x m]`: `n` tokens had this key, `key` is the sorted expert
//!   set of layer `L-1` (ctx1) or that of `L-2` then that of `L-1` (ctx2), `k` ids per layer,
//!   and `m` experts of layer `L` followed it, `count` times each. Only keys seen are stored.
//!
//! A prediction interpolates the orders, each weighted by how often its key was seen
//! (`λ = n / (n + 1)`): `p = λ2·p2 + (1-λ2)·(λ1·p1 + (1-λ1)·p0)`. An unseen two-layer key
//! (`n = 0`) thus backs off to the one-layer key, and an unseen one-layer key to the layer's
//! marginal frequency.

use std::collections::BTreeMap;
use std::path::Path;

use super::config::ModelConfig;
use crate::format::{GgufFile, GgufHeader, GgufValue, GgufWriter, TensorSpec};
use crate::{Error, Result};

/// The `edgemoe.predictor.format` value of the current layout.
pub const FORMAT: &str = "edgemoe.predictor/1";

/// Which predictor chooses the experts to preload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PredictorKind {
    /// No prediction, no preloading.
    #[default]
    None,
    /// Router look-ahead: later layers' routers on the current hidden state.
    LookAhead,
    /// EdgeMoE statistics stored in the model by `edgemoe profile`.
    Stats,
}

impl PredictorKind {
    /// The predictors that actually predict.
    pub const ALL: [PredictorKind; 2] = [PredictorKind::LookAhead, PredictorKind::Stats];

    /// Parses `lookahead`, `stats`, `none`.
    pub fn parse(s: &str) -> Result<PredictorKind> {
        match s {
            "lookahead" | "look-ahead" | "router" => Ok(PredictorKind::LookAhead),
            "stats" | "edgemoe" => Ok(PredictorKind::Stats),
            "none" | "off" => Ok(PredictorKind::None),
            other => Err(Error::InvalidArgument(format!(
                "unknown predictor `{other}` (lookahead, stats, none)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PredictorKind::None => "none",
            PredictorKind::LookAhead => "lookahead",
            PredictorKind::Stats => "stats",
        }
    }
}

/// How a session predicts and preloads experts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PredictionOptions {
    pub predictor: PredictorKind,
    /// Layers ahead to predict (1: the next layer).
    pub depth: usize,
    /// Experts preloaded per token per predicted layer; `None`: the experts a token uses (k).
    pub preload_count: Option<usize>,
    /// Also score the predictors that are not driving preloads (for reports), at the cost of
    /// running them.
    pub score_all: bool,
    /// Router look-ahead only: after layer `l`'s experts ran, predict layer `l + 1` again from
    /// the updated hidden state and preload what the first prediction missed (read while
    /// layer `l + 1`'s attention runs).
    pub refine: bool,
}

impl Default for PredictionOptions {
    fn default() -> Self {
        PredictionOptions {
            predictor: PredictorKind::None,
            depth: 1,
            preload_count: None,
            score_all: false,
            refine: true,
        }
    }
}

/// Counts for one key: tokens that had it, and the experts that followed (sorted by id).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Row {
    tokens: u32,
    counts: Vec<(u32, u32)>,
}

impl Row {
    fn add(&mut self, experts: &[u32]) {
        self.tokens = self.tokens.saturating_add(1);
        for &e in experts {
            match self.counts.binary_search_by_key(&e, |c| c.0) {
                Ok(i) => self.counts[i].1 = self.counts[i].1.saturating_add(1),
                Err(i) => self.counts.insert(i, (e, 1)),
            }
        }
    }
}

/// EdgeMoE's predictor table: per layer, expert counts given the previous layers' experts.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpertStats {
    n_layers: usize,
    n_experts: usize,
    k: usize,
    tokens: u64,
    /// What the table was counted on.
    pub calibration: Option<String>,
    /// `[layer][expert]`.
    marginal: Vec<Vec<u32>>,
    /// `[layer][order - 1]`: key -> row.
    ctx: Vec<[BTreeMap<Vec<u32>, Row>; 2]>,
}

impl ExpertStats {
    /// An empty table for `n_layers` layers of `n_experts`, `k` used per token.
    pub fn new(n_layers: usize, n_experts: usize, k: usize) -> Self {
        ExpertStats {
            n_layers,
            n_experts,
            k,
            tokens: 0,
            calibration: None,
            marginal: vec![vec![0; n_experts]; n_layers],
            ctx: (0..n_layers).map(|_| Default::default()).collect(),
        }
    }

    pub fn n_layers(&self) -> usize {
        self.n_layers
    }

    pub fn n_experts(&self) -> usize {
        self.n_experts
    }

    /// Tokens counted.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Distinct keys stored per order (one-layer, two-layer), over all layers.
    pub fn keys(&self) -> (usize, usize) {
        self.ctx
            .iter()
            .fold((0, 0), |(a, b), c| (a + c[0].len(), b + c[1].len()))
    }

    /// Counts one token: `layers[l]` are the experts layer `l` chose for it (any order).
    pub fn observe(&mut self, layers: &[Vec<usize>]) -> Result<()> {
        if layers.len() != self.n_layers {
            return Err(Error::InvalidArgument(format!(
                "a token routed through {} layers; the table has {}",
                layers.len(),
                self.n_layers
            )));
        }
        let mut sets: Vec<Vec<u32>> = Vec::with_capacity(layers.len());
        for experts in layers {
            if experts.len() != self.k || experts.iter().any(|&e| e >= self.n_experts) {
                return Err(Error::InvalidArgument(format!(
                    "routing {experts:?} is not {} experts below {}",
                    self.k, self.n_experts
                )));
            }
            let mut s: Vec<u32> = experts.iter().map(|&e| e as u32).collect();
            s.sort_unstable();
            sets.push(s);
        }
        self.tokens += 1;
        for (l, set) in sets.iter().enumerate() {
            for &e in set {
                let m = &mut self.marginal[l][e as usize];
                *m = m.saturating_add(1);
            }
            if l >= 1 {
                self.ctx[l][0]
                    .entry(sets[l - 1].clone())
                    .or_default()
                    .add(set);
            }
            if l >= 2 {
                let key = [sets[l - 2].as_slice(), &sets[l - 1]].concat();
                self.ctx[l][1].entry(key).or_default().add(set);
            }
        }
        Ok(())
    }

    /// The probability of each expert of `layer` (written to `out`, one per expert) given the
    /// experts chosen in the layer before (`prev1`) and the one before that (`prev2`), backing
    /// off as the module docs describe. Keys are sets: their order does not matter.
    pub fn predict(
        &self,
        layer: usize,
        prev1: Option<&[usize]>,
        prev2: Option<&[usize]>,
        out: &mut [f32],
    ) {
        out.iter_mut().for_each(|v| *v = 0.0);
        if layer >= self.n_layers || self.tokens == 0 {
            return;
        }
        let n = out.len().min(self.n_experts);
        let per_token = self.tokens as f64;
        // p0: marginal frequency (share of tokens that used the expert).
        let mut p: Vec<f64> = self.marginal[layer][..n]
            .iter()
            .map(|&c| c as f64 / per_token)
            .collect();
        let sorted = |s: &[usize]| {
            let mut v: Vec<u32> = s.iter().map(|&e| e as u32).collect();
            v.sort_unstable();
            v
        };
        let mix = |row: Option<&Row>, p: &mut Vec<f64>| {
            let Some(row) = row.filter(|r| r.tokens > 0) else {
                return;
            };
            let lambda = row.tokens as f64 / (row.tokens as f64 + 1.0);
            p.iter_mut().for_each(|v| *v *= 1.0 - lambda);
            for &(e, c) in &row.counts {
                if let Some(v) = p.get_mut(e as usize) {
                    *v += lambda * c as f64 / row.tokens as f64;
                }
            }
        };
        if layer >= 1 {
            if let Some(a) = prev1 {
                let key = sorted(a);
                mix(self.ctx[layer][0].get(&key), &mut p);
                if layer >= 2 {
                    if let Some(b) = prev2 {
                        let key2 = [sorted(b), key].concat();
                        mix(self.ctx[layer][1].get(&key2), &mut p);
                    }
                }
            }
        }
        for (o, v) in out.iter_mut().zip(p) {
            *o = v as f32;
        }
    }

    /// The `edgemoe.predictor.*` metadata keys holding this table.
    pub fn gguf_metadata(&self) -> Vec<(String, GgufValue)> {
        let key = |s: &str| format!("edgemoe.predictor.{s}");
        let mut meta = vec![
            (key("format"), GgufValue::String(FORMAT.into())),
            (key("tokens"), GgufValue::U64(self.tokens)),
            (key("experts_used"), GgufValue::U32(self.k as u32)),
        ];
        if let Some(c) = &self.calibration {
            meta.push((key("calibration"), GgufValue::String(c.clone())));
        }
        for l in 0..self.n_layers {
            meta.push((
                key(&format!("layer.{l}.marginal")),
                GgufValue::u32_array(self.marginal[l].iter().copied()),
            ));
            for order in 1..=2 {
                if l < order {
                    continue;
                }
                let mut flat = Vec::new();
                for (k, row) in &self.ctx[l][order - 1] {
                    flat.push(row.tokens);
                    flat.push(row.counts.len() as u32);
                    flat.extend_from_slice(k);
                    for &(e, c) in &row.counts {
                        flat.push(e);
                        flat.push(c);
                    }
                }
                meta.push((
                    key(&format!("layer.{l}.ctx{order}")),
                    GgufValue::u32_array(flat),
                ));
            }
        }
        meta
    }

    /// The table stored in a model's metadata, `None` when there is none. Every count, key and
    /// expert id is checked against the model's shape: a malformed table is
    /// [`Error::InvalidFile`].
    pub fn from_gguf(header: &GgufHeader, cfg: &ModelConfig, path: &Path) -> Result<Option<Self>> {
        Self::from_lookup(&|k| header.get(k), cfg.n_layers, cfg.n_experts, path)
    }

    /// [`ExpertStats::from_gguf`] over any metadata lookup.
    fn from_lookup<'a>(
        lookup: &dyn Fn(&str) -> Option<&'a GgufValue>,
        n_layers: usize,
        n_experts: usize,
        path: &Path,
    ) -> Result<Option<Self>> {
        let header = lookup;
        let Some(format) = header("edgemoe.predictor.format") else {
            return Ok(None);
        };
        let bad =
            |reason: String| Error::invalid_file(path, format!("edgemoe.predictor: {reason}"));
        if format.as_str() != Some(FORMAT) {
            return Err(bad(format!("format is not `{FORMAT}`")));
        }
        let get = |k: &str| header(&format!("edgemoe.predictor.{k}"));
        let tokens = get("tokens")
            .and_then(GgufValue::as_u64)
            .ok_or_else(|| bad("`tokens` missing or not an integer".into()))?;
        let k = get("experts_used")
            .and_then(GgufValue::as_u64)
            .ok_or_else(|| bad("`experts_used` missing or not an integer".into()))?
            as usize;
        if k == 0 || k > n_experts {
            return Err(bad(format!("experts_used {k} with {n_experts} experts")));
        }
        let u32s = |name: &str| -> Result<Vec<u32>> {
            let v = get(name).ok_or_else(|| bad(format!("`{name}` missing")))?;
            let items = v
                .as_array()
                .ok_or_else(|| bad(format!("`{name}` is not an array")))?;
            items
                .iter()
                .map(|x| {
                    x.as_u64()
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or_else(|| bad(format!("`{name}` holds {x:?}, not a u32")))
                })
                .collect()
        };
        let mut t = ExpertStats::new(n_layers, n_experts, k);
        t.tokens = tokens;
        t.calibration = get("calibration")
            .and_then(GgufValue::as_str)
            .map(str::to_string);
        for l in 0..n_layers {
            let name = format!("layer.{l}.marginal");
            let m = u32s(&name)?;
            if m.len() != n_experts {
                return Err(bad(format!(
                    "`{name}` has {} entries for {n_experts} experts",
                    m.len()
                )));
            }
            t.marginal[l] = m;
            for order in 1..=2usize {
                if l < order {
                    continue;
                }
                let name = format!("layer.{l}.ctx{order}");
                let flat = u32s(&name)?;
                t.ctx[l][order - 1] = parse_ctx(&flat, order * k, n_experts)
                    .map_err(|why| bad(format!("`{name}`: {why}")))?;
            }
        }
        Ok(Some(t))
    }
}

/// One layer's context table from its flat records (`tokens, m, key[width], (expert, count)
/// * m`, each expert id below `n_experts` and ascending); the error says what is malformed.
fn parse_ctx(
    flat: &[u32],
    width: usize,
    n_experts: usize,
) -> std::result::Result<BTreeMap<Vec<u32>, Row>, String> {
    let mut map = BTreeMap::new();
    let mut rest = flat;
    let mut take = |n: usize| -> std::result::Result<&[u32], String> {
        if n > rest.len() {
            return Err("ends inside a record".into());
        }
        let (s, r) = rest.split_at(n);
        rest = r;
        Ok(s)
    };
    let mut left = flat.len();
    while left > 0 {
        let head = take(2)?;
        let (n, m) = (head[0], head[1] as usize);
        if m > n_experts {
            return Err(format!("a record of {m} experts"));
        }
        let key = take(width)?.to_vec();
        if key.iter().any(|&e| e as usize >= n_experts) {
            return Err(format!("key {key:?} names no expert"));
        }
        let pairs = take(2 * m)?;
        left -= 2 + width + 2 * m;
        let mut row = Row {
            tokens: n,
            counts: Vec::with_capacity(m),
        };
        for p in pairs.chunks_exact(2) {
            if p[0] as usize >= n_experts || row.counts.last().is_some_and(|&(e, _)| e >= p[0]) {
                return Err(format!(
                    "expert ids must be ascending and below {n_experts}"
                ));
            }
            row.counts.push((p[0], p[1]));
        }
        if map.insert(key, row).is_some() {
            return Err("a key appears twice".into());
        }
    }
    Ok(map)
}

/// Copies the model file `input` to `output` with `stats` in its metadata (replacing any
/// table already there). Tensor data is copied byte for byte in file order, so the layout
/// (alignment, experts back to back) is unchanged.
pub fn write_model_with_stats(input: &Path, output: &Path, stats: &ExpertStats) -> Result<()> {
    if input.canonicalize().ok() == output.canonicalize().ok() && output.exists() {
        return Err(Error::InvalidArgument(
            "profile writes a new file: the output must differ from the input".into(),
        ));
    }
    let file = GgufFile::open(input)?;
    let mut meta: Vec<(String, GgufValue)> = file
        .header
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("edgemoe.predictor."))
        .cloned()
        .collect();
    if !meta.iter().any(|(k, _)| k == "general.alignment") {
        meta.push((
            "general.alignment".into(),
            GgufValue::U32(file.header.alignment as u32),
        ));
    }
    meta.extend(stats.gguf_metadata());
    let mut tensors: Vec<_> = file.header.tensors.iter().collect();
    tensors.sort_by_key(|t| t.offset);
    let specs = tensors
        .iter()
        .map(|t| TensorSpec {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.ty,
        })
        .collect();
    let mut w = GgufWriter::create(output, &meta, specs)?;
    for t in tensors {
        w.write_tensor(file.data(t))?;
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ExpertStats {
        let mut t = ExpertStats::new(3, 4, 2);
        // Layer 1 follows layer 0 deterministically; layer 2 depends on both.
        let tokens = [
            [vec![0, 1], vec![2, 3], vec![0, 2]],
            [vec![1, 0], vec![3, 2], vec![0, 2]],
            [vec![2, 3], vec![0, 1], vec![1, 3]],
            [vec![0, 1], vec![2, 3], vec![0, 2]],
            [vec![0, 2], vec![2, 3], vec![1, 3]],
        ];
        for tok in &tokens {
            t.observe(tok).unwrap();
        }
        t
    }

    fn top2(p: &[f32]) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..p.len()).collect();
        idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        idx.truncate(2);
        idx.sort_unstable();
        idx
    }

    #[test]
    fn predicts_and_backs_off() {
        let t = table();
        let mut p = vec![0f32; 4];
        // One-layer key seen 3 times (set order does not matter).
        t.predict(1, Some(&[1, 0]), None, &mut p);
        assert_eq!(top2(&p), vec![2, 3]);
        // Two-layer keys separate what the one-layer key {2,3} mixes.
        t.predict(2, Some(&[2, 3]), Some(&[0, 1]), &mut p);
        assert_eq!(top2(&p), vec![0, 2]);
        t.predict(2, Some(&[3, 2]), Some(&[2, 0]), &mut p);
        assert_eq!(top2(&p), vec![1, 3]);
        // Unseen two-layer key: the one-layer key {0,1} (always followed by {1,3}).
        t.predict(2, Some(&[0, 1]), Some(&[1, 2]), &mut p);
        assert_eq!(top2(&p), vec![1, 3]);
        // Unseen one-layer key: the marginal of layer 2 (0 and 2 three times of five).
        t.predict(2, Some(&[1, 2]), None, &mut p);
        assert_eq!(top2(&p), vec![0, 2]);
        let sum: f32 = p.iter().sum();
        assert!((sum - 2.0).abs() < 1e-5, "{p:?}");
        // Layer 0 has no context: the marginal.
        t.predict(0, None, None, &mut p);
        assert_eq!(top2(&p), vec![0, 1]);
        assert!(t.clone().observe(&[vec![0, 1]]).is_err());
        assert!(t
            .clone()
            .observe(&[vec![0], vec![1, 2], vec![2, 3]])
            .is_err());
        assert!(t
            .clone()
            .observe(&[vec![0, 9], vec![1, 2], vec![2, 3]])
            .is_err());
    }

    #[test]
    fn metadata_round_trip_and_malformed_tables() {
        let mut t = table();
        t.calibration = Some("unit test".into());
        let meta = t.gguf_metadata();
        let p = Path::new("m.gguf");
        let read = |m: &[(String, GgufValue)], shape: (usize, usize)| {
            let map: std::collections::HashMap<String, GgufValue> = m.iter().cloned().collect();
            ExpertStats::from_lookup(&|k| map.get(k), shape.0, shape.1, p)
        };
        let back = read(&meta, (3, 4)).unwrap().unwrap();
        assert_eq!(back, t);
        assert!(read(&[], (3, 4)).unwrap().is_none());
        // A table for another shape, a truncated record, an expert id out of range.
        assert!(read(&meta, (3, 3)).is_err());
        assert!(read(&meta, (4, 4)).is_err());
        let edit = |name: &str, f: &dyn Fn(&mut Vec<GgufValue>)| {
            let mut m = meta.clone();
            for (k, v) in &mut m {
                if k == name {
                    if let GgufValue::Array { items, .. } = v {
                        f(items);
                    }
                }
            }
            m
        };
        let truncated = edit("edgemoe.predictor.layer.2.ctx2", &|v| {
            v.pop();
        });
        assert!(matches!(
            read(&truncated, (3, 4)),
            Err(Error::InvalidFile { .. })
        ));
        let out_of_range = edit("edgemoe.predictor.layer.1.ctx1", &|v| {
            v[2] = GgufValue::U32(7);
        });
        assert!(read(&out_of_range, (3, 4)).is_err());
        let negative = edit("edgemoe.predictor.layer.0.marginal", &|v| {
            v[0] = GgufValue::I32(-1);
        });
        assert!(read(&negative, (3, 4)).is_err());
        let mut wrong = meta.clone();
        wrong[0].1 = GgufValue::String("other/1".into());
        assert!(read(&wrong, (3, 4)).is_err());
    }
}
