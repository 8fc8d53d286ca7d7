//! `edgemoe profile`: count which experts follow which on calibration text (EdgeMoE's
//! statistics predictor) and write a copy of the model carrying the table.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use edgemoe::engine::predictor::write_model_with_stats;
use edgemoe::engine::profile::profile;
use edgemoe::engine::{LoadOptions, Model};
use indicatif::ProgressBar;

use crate::options::{char_offset, default_model, window_bar};

#[derive(Args)]
pub struct ProfileArgs {
    /// Model file (GGUF). Default: the bundled demo model, models/demo.gguf.
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Calibration text.
    #[arg(short = 'f', long)]
    text: PathBuf,
    /// Use only the first fraction of the text (0.9: the demo model's training split).
    #[arg(long, default_value_t = 0.9)]
    head: f64,
    /// Most calibration tokens (from the start of the text).
    #[arg(long, default_value_t = 32768)]
    tokens: usize,
    /// Tokens per window (each window starts from an empty cache).
    #[arg(long, default_value_t = 256)]
    ctx: usize,
    /// Output GGUF: the model with the predictor table.
    #[arg(short, long)]
    output: PathBuf,
    /// Kernel threads (0: one per physical core).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: ProfileArgs) -> edgemoe::Result<()> {
    let path = a.model.clone().unwrap_or_else(default_model);
    let model = Arc::new(Model::load_with(
        &path,
        LoadOptions {
            threads: a.threads,
            ..Default::default()
        },
    )?);
    let text = std::fs::read_to_string(&a.text).map_err(|e| edgemoe::Error::io(&a.text, e))?;
    let keep = (text.chars().count() as f64 * a.head.clamp(0.0, 1.0)) as usize;
    let mut ids = model
        .tokenizer()?
        .encode(&text[..char_offset(&text, keep)], false)?;
    ids.truncate(a.tokens);
    let windows = ids.len().div_ceil(a.ctx.max(1));
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        window_bar("profile", windows)
    };
    let started = std::time::Instant::now();
    let mut stats = profile(&model, &ids, a.ctx, &mut |done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    stats.calibration = Some(format!(
        "{} tokens of {} (first {:.0}%), windows of {}",
        ids.len(),
        a.text
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        100.0 * a.head.clamp(0.0, 1.0),
        a.ctx
    ));
    write_model_with_stats(&path, &a.output, &stats)?;
    let (k1, k2) = stats.keys();
    eprintln!(
        "counted {} tokens in {:.1} s: {k1} one-layer and {k2} two-layer keys; wrote {}",
        stats.tokens(),
        started.elapsed().as_secs_f64(),
        a.output.display()
    );
    Ok(())
}
