//! `edgemoe perplexity`: perplexity on a text file (sliding window, no BOS).

use std::sync::Arc;

use clap::Args;
use edgemoe::engine::perplexity::perplexity_with;

use crate::options::{human, window_bar, ModelArgs, TextArgs};

#[derive(Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    text: TextArgs,
    /// Evaluate each window one token at a time, as decoding does (same logits; needed to
    /// measure lower precision on a miss, which a batch rarely triggers: in a window every
    /// expert is some token's top-1).
    #[arg(long)]
    token_by_token: bool,
    /// Print expert-streaming figures at the end.
    #[arg(long)]
    stats: bool,
}

pub fn run(mut a: PerplexityArgs) -> edgemoe::Result<()> {
    a.model.context_length = Some(a.text.ctx);
    let model = Arc::new(a.model.load()?);
    let ids = a.text.tokens(&model)?;
    let (ctx, stride) = (a.text.ctx, a.text.stride());
    let windows = edgemoe::engine::perplexity::plan(ids.len(), ctx, stride)?;
    let bar = window_bar("perplexity", windows.len());
    let r = perplexity_with(
        &model,
        &ids,
        ctx,
        stride,
        a.token_by_token,
        &mut |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    println!(
        "perplexity {:.4} ± {:.4} (mean NLL {:.5} ± {:.5}) over {} windows of {ctx} tokens, stride {stride}, {} predictions",
        r.perplexity, r.perplexity_std_error, r.mean_nll, r.nll_std_error, r.windows, r.predictions
    );
    if let (true, Some(st)) = (a.stats, model.streamed()) {
        let s = st.stats();
        eprintln!(
            "experts: {} fetches, {} cache hits, {} misses, read {}; {} fetches at low precision, saved {}",
            s.gets,
            s.hits,
            s.misses,
            human(s.bytes_read),
            s.low_gets,
            human(s.low_bytes_saved)
        );
    }
    Ok(())
}
