//! `edgemoe kl`: a model's next-token distributions against a reference model's on a text.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use edgemoe::engine::Model;

use crate::options::{window_bar, ModelArgs, TextArgs};

#[derive(Args)]
pub struct KlArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The reference model (GGUF), e.g. the f16 file a quantised one was made from.
    #[arg(short, long)]
    reference: PathBuf,
    #[command(flatten)]
    text: TextArgs,
}

pub fn run(mut a: KlArgs) -> edgemoe::Result<()> {
    a.model.context_length = Some(a.text.ctx);
    let model = Arc::new(a.model.load()?);
    let reference = Arc::new(Model::load(&a.reference)?);
    let ids = a.text.tokens(&reference)?;
    let (ctx, stride) = (a.text.ctx, a.text.stride());
    let windows = edgemoe::engine::perplexity::plan(ids.len(), ctx, stride)?;
    let bar = window_bar("kl", windows.len());
    let d = edgemoe::engine::divergence::compare(
        &model,
        &reference,
        &ids,
        ctx,
        stride,
        &mut |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    println!(
        "KL(reference || model) {:.6} ± {:.6} nats per token; top-1 agreement {:.2}%",
        d.kl,
        d.kl_std_error,
        100.0 * d.top1_agreement
    );
    println!(
        "perplexity: model {:.4} ± {:.4}, reference {:.4} ± {:.4} ({:+.3}%); {} predictions in {} windows of {ctx}, stride {stride}",
        d.model.perplexity,
        d.model.perplexity_std_error,
        d.reference.perplexity,
        d.reference.perplexity_std_error,
        100.0 * (d.model.perplexity / d.reference.perplexity - 1.0),
        d.model.predictions,
        d.model.windows
    );
    Ok(())
}
