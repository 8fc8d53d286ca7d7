//! `edgemoe calibrate`: per-expert quantisation types within a quality tolerance (EdgeMoE's
//! bitwidth adaptation); writes the type table, the converted model and a report.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use edgemoe::convert::calibrate::{calibrate, CalibrateOptions, Calibration, Objective, Tolerance};
use edgemoe::convert::expert_types::ExpertTypes;
use edgemoe::convert::{convert, convert_with_expert_types, ConvertOptions};
use edgemoe::engine::Model;
use edgemoe::tensor::GgmlType;

use crate::convert::report_fallbacks;
use crate::options::{char_offset, human, StageBars};

#[derive(Args)]
pub struct CalibrateArgs {
    /// The model: a GGUF with float (f16/f32/bf16) experts, or a Hugging Face checkpoint
    /// directory (converted to f16 first).
    input: PathBuf,
    /// Calibration text; unless --heldout is given, its last --heldout-fraction is held out.
    #[arg(short = 'f', long)]
    text: PathBuf,
    /// Held-out text the tolerance is checked on.
    #[arg(long)]
    heldout: Option<PathBuf>,
    #[arg(long, default_value_t = 0.1)]
    heldout_fraction: f64,
    /// Calibration tokens (from the start of the calibration text).
    #[arg(long, default_value_t = 2048)]
    calib_tokens: usize,
    /// Held-out tokens (from the start of the held-out text).
    #[arg(long, default_value_t = 8192)]
    heldout_tokens: usize,
    /// Tolerance: held-out perplexity increase over the baseline (e.g. 1% or 0.01).
    #[arg(long, default_value = "1%")]
    max_ppl_increase: String,
    /// Tolerance as a KL budget instead: mean KL(baseline || model) in nats per token.
    #[arg(long)]
    max_kl: Option<f64>,
    /// Keep this many standard errors of the held-out change (the paired per-token NLL change,
    /// or the KL) below the tolerance, so that the choice holds on other text too (the search's
    /// pick otherwise sits just inside the tolerance on its own held-out text). Default: none
    #[arg(long, default_value_t = 0.0)]
    margin: f64,
    /// Further perplexity tolerances to report (the Pareto curve), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.25%,0.5%,2%,5%")]
    sweep: Vec<String>,
    /// Candidate types, comma-separated (those that do not fit the expert rows are dropped;
    /// with the default list and no K-quant fitting, q4_0..q5_1 are used).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q2_k,q3_k,q4_k,q5_k,q6_k,q8_0"
    )]
    types: Vec<String>,
    /// The type every expert starts at and quality is measured against.
    #[arg(long, default_value = "q8_0")]
    baseline: String,
    /// Minimise total expert bytes (`bytes`) or expected bytes read per token (`reads`).
    #[arg(long, default_value = "bytes")]
    objective: String,
    /// Tokens per evaluation window.
    #[arg(long, default_value_t = 256)]
    ctx: usize,
    /// Output directory: expert-types.json, model.gguf, report.md, report.json.
    #[arg(short, long)]
    out: PathBuf,
    /// Hide progress bars.
    #[arg(long)]
    quiet: bool,
}

fn io(p: &Path, e: std::io::Error) -> edgemoe::Error {
    edgemoe::Error::io(p, e)
}

/// `1%` or `0.01` as a fraction.
fn parse_fraction(s: &str) -> edgemoe::Result<f64> {
    let bad =
        || edgemoe::Error::InvalidArgument(format!("`{s}` is not a fraction like 1% or 0.01"));
    let v = match s.trim().strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => s.trim().parse::<f64>().map_err(|_| bad())?,
    };
    if !(v.is_finite() && v >= 0.0) {
        return Err(bad());
    }
    Ok(v)
}

pub fn run(a: CalibrateArgs) -> edgemoe::Result<()> {
    let bars = StageBars::default();
    std::fs::create_dir_all(&a.out).map_err(|e| io(&a.out, e))?;
    let gguf = input_gguf(&a, &bars)?;
    let model = Arc::new(Model::load(&gguf)?);
    let (calib, heldout) = a.tokens(&model)?;
    let opts = a.options(&bars)?;
    let started = std::time::Instant::now();
    let cal = calibrate(&model, &calib, &heldout, &opts)?;
    let seconds = started.elapsed().as_secs_f64();
    write_outputs(&a, &cal, seconds, &bars)
}

/// The GGUF to calibrate: the input, or a checkpoint directory converted to f16 first (the
/// final model is made from the input).
fn input_gguf(a: &CalibrateArgs, bars: &StageBars) -> edgemoe::Result<PathBuf> {
    if !a.input.is_dir() {
        return Ok(a.input.clone());
    }
    let path = a.out.join("input-f16.gguf");
    let opts = ConvertOptions {
        progress: bars.callback(a.quiet),
        ..Default::default()
    };
    convert(&a.input, &path, &opts)?;
    Ok(path)
}

impl CalibrateArgs {
    /// The calibration and held-out texts: two files, or one split by characters.
    fn texts(&self) -> edgemoe::Result<(String, String)> {
        let text = std::fs::read_to_string(&self.text).map_err(|e| io(&self.text, e))?;
        Ok(match &self.heldout {
            Some(p) => (text, std::fs::read_to_string(p).map_err(|e| io(p, e))?),
            None => {
                let n = text.chars().count();
                let keep = (n as f64 * (1.0 - self.heldout_fraction.clamp(0.0, 1.0))) as usize;
                let at = char_offset(&text, keep);
                (text[..at].to_string(), text[at..].to_string())
            }
        })
    }

    /// The calibration and held-out tokens, each cut to its count.
    fn tokens(&self, model: &Model) -> edgemoe::Result<(Vec<u32>, Vec<u32>)> {
        let (calib_text, heldout_text) = self.texts()?;
        let tok = model.tokenizer()?;
        let mut calib = tok.encode(&calib_text, false)?;
        calib.truncate(self.calib_tokens);
        let mut heldout = tok.encode(&heldout_text, false)?;
        heldout.truncate(self.heldout_tokens);
        Ok((calib, heldout))
    }

    fn options(&self, bars: &StageBars) -> edgemoe::Result<CalibrateOptions> {
        let types = self
            .types
            .iter()
            .map(|t| GgmlType::from_name(t))
            .collect::<edgemoe::Result<Vec<_>>>()?;
        Ok(CalibrateOptions {
            candidates: types,
            baseline: GgmlType::from_name(&self.baseline)?,
            tolerance: match self.max_kl {
                Some(k) => Tolerance::Kl(k),
                None => Tolerance::PplIncrease(parse_fraction(&self.max_ppl_increase)?),
            },
            sweep: self
                .sweep
                .iter()
                .map(|s| parse_fraction(s))
                .collect::<edgemoe::Result<_>>()?,
            objective: match self.objective.as_str() {
                "bytes" => Objective::Bytes,
                "reads" => Objective::Reads,
                o => {
                    return Err(edgemoe::Error::InvalidArgument(format!(
                        "unknown objective `{o}` (bytes, reads)"
                    )))
                }
            },
            ctx: self.ctx,
            margin: if self.margin.is_finite() && self.margin >= 0.0 {
                self.margin
            } else {
                return Err(edgemoe::Error::InvalidArgument(format!(
                    "--margin must be a non-negative number of standard errors, not {}",
                    self.margin
                )));
            },
            progress: bars.callback(self.quiet),
        })
    }
}

/// Writes the type table, the model converted with it, report.md and report.json.
fn write_outputs(
    a: &CalibrateArgs,
    cal: &Calibration,
    seconds: f64,
    bars: &StageBars,
) -> edgemoe::Result<()> {
    let table_path = a.out.join("expert-types.json");
    cal.chosen.write(&table_path)?;
    let model_path = a.out.join("model.gguf");
    let convert_opts = ConvertOptions {
        progress: bars.callback(a.quiet),
        ..Default::default()
    };
    let report = convert_with_expert_types(&a.input, &model_path, &convert_opts, &cal.chosen)?;
    report_fallbacks(&report.fallbacks);
    let md = format!(
        "# Bitwidth calibration of {}\n\n{}\nCalibration took {seconds:.0} s.\n",
        a.input.display(),
        cal.markdown()
    );
    std::fs::write(a.out.join("report.md"), &md).map_err(|e| io(&a.out, e))?;
    write_json(a, cal, seconds)?;
    println!("{md}");
    eprintln!(
        "wrote {}, {} ({}), report.md, report.json in {}",
        table_path.display(),
        model_path.display(),
        human(report.bytes_written),
        a.out.display()
    );
    Ok(())
}

/// report.json: the calibration with the type tables by name, the model and the time taken.
fn write_json(a: &CalibrateArgs, cal: &Calibration, seconds: f64) -> edgemoe::Result<()> {
    let mut json =
        serde_json::to_value(cal).map_err(|e| edgemoe::Error::InvalidArgument(e.to_string()))?;
    let names = |t: &ExpertTypes| -> Vec<Vec<&'static str>> {
        t.layers
            .iter()
            .map(|l| l.iter().map(|x| x.name()).collect())
            .collect()
    };
    json["adapted_types"] =
        serde_json::json!(cal.adapted_types.iter().map(names).collect::<Vec<_>>());
    json["kl_matched_types"] =
        serde_json::json!(cal.kl_matched_types.iter().map(names).collect::<Vec<_>>());
    json["model"] = serde_json::json!(a.input.display().to_string());
    json["seconds"] = serde_json::json!(seconds);
    let json_path = a.out.join("report.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )
    .map_err(|e| io(&json_path, e))
}
