//! The calibration report as markdown: the candidates and notes, every measured assignment,
//! the equal-quality comparison with the uniform types, and the types chosen per layer.

#![forbid(unsafe_code)]

use super::heldout::within;
use super::{Calibration, Point, Tolerance};

impl Calibration {
    /// The uniform type with the fewest bytes within tolerance `t` of the baseline.
    pub fn best_uniform_within(&self, t: Tolerance) -> Option<&Point> {
        self.uniform
            .iter()
            .filter(|p| within(t, p, &self.baseline, self.margin))
            .min_by_key(|p| p.expert_bytes)
    }

    /// A markdown report: candidates, uniform and adapted points, histogram per layer.
    pub fn markdown(&self) -> String {
        let mut s = self.markdown_setup();
        s.push_str(&self.markdown_points());
        s.push_str(&self.markdown_kl_matched());
        s.push_str(&self.markdown_layers());
        s
    }

    /// Candidates, token counts, tolerance, notes, and the proxy's rank correlation.
    fn markdown_setup(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "Candidate types: {} (baseline {}). Calibration {} tokens, held-out {} tokens. Tolerance: {}{}.\n\n",
            self.types.join(", "),
            self.types[0],
            self.calibration_tokens,
            self.heldout_tokens,
            self.tolerance,
            if self.margin > 0.0 {
                format!(
                    ", with {} standard errors of the measured change to spare (uniform types too)",
                    self.margin
                )
            } else {
                String::new()
            }
        ));
        for n in &self.notes {
            s.push_str(&format!("- {n}\n"));
        }
        s.push_str(&format!(
            "\nProxy (routing frequency x relative weight error) vs measured sensitivity at {}: Spearman rank correlation {:.3} over {} experts.\n\n",
            self.types.last().map(String::as_str).unwrap_or("?"),
            self.proxy_spearman,
            self.experts.len()
        ));
        s
    }

    /// The uniform and adapted points, and the adapted bytes against the best uniform type
    /// at the requested tolerance.
    fn markdown_points(&self) -> String {
        let base = &self.baseline;
        let mut s = String::new();
        s.push_str("| assignment | expert bytes | vs baseline | bytes read / token | held-out ppl | Δppl | KL vs baseline | top-1 |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for p in self.uniform.iter().chain(&self.adapted) {
            s.push_str(&format!(
                "| {} | {} | {:.3}x | {:.0} | {:.3} ± {:.3} | {:+.2}% | {:.5} | {:.2}% |\n",
                p.label,
                p.expert_bytes,
                p.expert_bytes as f64 / base.expert_bytes as f64,
                p.reads_per_token,
                p.perplexity,
                p.perplexity_std_error,
                100.0 * (p.perplexity / base.perplexity - 1.0),
                p.kl,
                100.0 * p.top1_agreement
            ));
        }
        if let (Some(best), Some(chosen)) = (
            self.best_uniform_within(self.requested),
            self.adapted.first(),
        ) {
            s.push_str(&format!(
                "\nAt the requested tolerance the adapted experts take {:.3}x the bytes of the best uniform type within it ({}).\n",
                chosen.expert_bytes as f64 / best.expert_bytes as f64,
                best.label
            ));
        }
        s
    }

    /// Each uniform type against the adapted assignment of at most its held-out KL.
    fn markdown_kl_matched(&self) -> String {
        let mut s = String::new();
        s.push_str("\nAt equal held-out KL (vs the baseline) to each uniform type:\n\n| uniform | bytes | KL | ppl | adapted bytes | KL | ppl | adapted / uniform bytes |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for (u, a) in &self.kl_matched {
            s.push_str(&format!(
                "| {} | {} | {:.5} | {:.3} | {} | {:.5} | {:.3} | {:.3}x |\n",
                u.label,
                u.expert_bytes,
                u.kl,
                u.perplexity,
                a.expert_bytes,
                a.kl,
                a.perplexity,
                a.expert_bytes as f64 / u.expert_bytes as f64
            ));
        }
        s
    }

    /// How many experts of each layer take each type at the requested tolerance.
    fn markdown_layers(&self) -> String {
        let mut s = String::new();
        s.push_str("\nTypes per layer (requested tolerance):\n\n| layer | ");
        s.push_str(&self.types.join(" | "));
        s.push_str(" |\n|---|");
        s.push_str(&"---:|".repeat(self.types.len()));
        s.push('\n');
        for (l, layer) in self.chosen.layers.iter().enumerate() {
            s.push_str(&format!("| {l} |"));
            for t in &self.types {
                let count = layer.iter().filter(|x| x.name() == t).count();
                s.push_str(&format!(" {count} |"));
            }
            s.push('\n');
        }
        s
    }
}
