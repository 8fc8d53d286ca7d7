//! A compact text format for recorded routing: per token, per layer, the experts used and
//! what the predictor named for that layer before it ran. Small enough to commit as a test
//! fixture; `examples/record_routing.rs` writes it.
//!
//! ```text
//! # any comment
//! layers 4 experts 8 used 2
//! 3,5/3,6/ 0,1/0,1/2 ...
//! ```
//!
//! After the header, one line per token with one field per layer, separated by spaces; a
//! field is `used/predicted/refined`, each a comma-separated list of expert ids (possibly
//! empty): `predicted` is what the engine knew before the layer before fetched its experts,
//! `refined` what the look-ahead added once that layer had run. `/predicted/refined` may be
//! left off.

use super::replay::ReplayStep;
use super::Key;

/// A recorded routing trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayTrace {
    pub n_layers: usize,
    pub n_experts: usize,
    /// Experts each token uses per layer (top-k).
    pub n_used: usize,
    /// `tokens[t][l]`: layer `l` of token `t`.
    pub tokens: Vec<Vec<TraceLayer>>,
}

/// One layer of one token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceLayer {
    /// Experts the router chose, most probable first.
    pub used: Vec<usize>,
    /// Experts predicted for this layer before the layer before fetched its experts.
    pub predicted: Vec<usize>,
    /// Experts the refined prediction added once the layer before had run.
    pub refined: Vec<usize>,
}

impl ReplayTrace {
    /// Parses the text format; the error names the line.
    pub fn parse(text: &str) -> Result<ReplayTrace, String> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        let (_, header) = lines.next().ok_or("no header line")?;
        let mut t = ReplayTrace::default();
        let h: Vec<&str> = header.split_whitespace().collect();
        match h.as_slice() {
            ["layers", l, "experts", e, "used", k] => {
                let num = |s: &str| s.parse::<usize>().map_err(|e| format!("header: {e}"));
                (t.n_layers, t.n_experts, t.n_used) = (num(l)?, num(e)?, num(k)?);
            }
            _ => return Err(format!("bad header {header:?}")),
        }
        for (n, line) in lines {
            let token = line
                .split_whitespace()
                .map(|f| t.parse_layer(f))
                .collect::<Result<Vec<_>, String>>()
                .map_err(|e| format!("line {n}: {e}"))?;
            if token.len() != t.n_layers {
                return Err(format!(
                    "line {n}: {} layers, not {}",
                    token.len(),
                    t.n_layers
                ));
            }
            t.tokens.push(token);
        }
        Ok(t)
    }

    fn parse_layer(&self, field: &str) -> Result<TraceLayer, String> {
        let list = |s: Option<&str>| -> Result<Vec<usize>, String> {
            s.unwrap_or("")
                .split(',')
                .filter(|x| !x.is_empty())
                .map(|x| match x.parse::<usize>() {
                    Ok(e) if e < self.n_experts => Ok(e),
                    _ => Err(format!("bad expert {x:?}")),
                })
                .collect()
        };
        let mut parts = field.split('/');
        Ok(TraceLayer {
            used: list(parts.next())?,
            predicted: list(parts.next())?,
            refined: list(parts.next())?,
        })
    }

    /// The text format, with `comment` as `#` lines first.
    pub fn to_text(&self, comment: &str) -> String {
        let mut out = String::new();
        for line in comment.lines() {
            out.push_str(&format!("# {line}\n"));
        }
        out.push_str(&format!(
            "layers {} experts {} used {}\n",
            self.n_layers, self.n_experts, self.n_used
        ));
        let join = |v: &[usize]| {
            v.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        for token in &self.tokens {
            let fields: Vec<String> = token
                .iter()
                .map(|l| {
                    if l.predicted.is_empty() && l.refined.is_empty() {
                        join(&l.used)
                    } else {
                        format!(
                            "{}/{}/{}",
                            join(&l.used),
                            join(&l.predicted),
                            join(&l.refined)
                        )
                    }
                })
                .collect();
            out.push_str(&fields.join(" "));
            out.push('\n');
        }
        out
    }

    /// Every expert fetch in the order the forward pass makes them (decode, one token at a
    /// time): layer by layer, ascending expert ids within a layer.
    pub fn keys(&self) -> Vec<Key> {
        let mut keys = Vec::new();
        for token in &self.tokens {
            for (l, layer) in token.iter().enumerate() {
                let mut e = layer.used.clone();
                e.sort_unstable();
                e.dedup();
                keys.extend(e.into_iter().map(|x| (l, x)));
            }
        }
        keys
    }

    /// The trace as the engine ran it, layer by layer, with the predictions of the next layer.
    pub fn steps(&self) -> Vec<ReplayStep> {
        let mut steps = Vec::new();
        for token in &self.tokens {
            for (l, layer) in token.iter().enumerate() {
                let next = token.get(l + 1);
                steps.push(ReplayStep {
                    layer: l,
                    used: layer.used.clone(),
                    predicted_next: next.map(|n| n.predicted.clone()).unwrap_or_default(),
                    refined_next: next.map(|n| n.refined.clone()).unwrap_or_default(),
                });
            }
        }
        steps
    }

    /// Experts in all (`n_layers * n_experts`).
    pub fn total_experts(&self) -> usize {
        self.n_layers * self.n_experts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let text = "# demo\nlayers 2 experts 4 used 2\n3,1/1,2/3 0,2\n0,1 2,3//1\n";
        let t = ReplayTrace::parse(text).unwrap();
        assert_eq!((t.n_layers, t.n_experts, t.n_used), (2, 4, 2));
        assert_eq!(t.tokens[0][0].predicted, vec![1, 2]);
        assert_eq!(t.tokens[1][1].refined, vec![1]);
        assert_eq!(ReplayTrace::parse(&t.to_text("demo")).unwrap(), t);
        assert_eq!(t.keys()[..2], [(0, 1), (0, 3)]);
        let steps = t.steps();
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[2].refined_next, vec![1]);
        assert!(steps[1].predicted_next.is_empty());
        assert!(ReplayTrace::parse("layers 2 experts 4 used 2\n0 1 2\n").is_err());
        assert!(ReplayTrace::parse("layers 1 experts 4 used 2\n9\n").is_err());
    }
}
