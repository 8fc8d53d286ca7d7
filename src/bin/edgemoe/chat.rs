//! `edgemoe chat`: a multi-turn conversation on standard input, rendered with the model's chat
//! template, the KV cache kept across turns (each turn evaluates only what the template added
//! since the cached tokens).

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

use clap::Args;
use edgemoe::chat::{ChatTemplate, Message, RenderOptions, SpecialTokens};
use edgemoe::engine::generate::{generate_ids, GenerateParams, StopReason};
use edgemoe::engine::session::CancelHandle;
use edgemoe::engine::Session;
use edgemoe::tokenizer::Tokenizer;
use edgemoe::Error;

use crate::options::{ModelArgs, SamplingArgs};

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A system message that starts the conversation.
    #[arg(long)]
    system: Option<String>,
    /// A Jinja chat template file to use instead of the model's own.
    #[arg(long)]
    template: Option<std::path::PathBuf>,
    /// Most tokens of one reply.
    #[arg(short = 'n', long, default_value_t = 512)]
    max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Context length of the conversation (tokens).
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
}

/// The conversation (the session's cache holds its rendered tokens, or a prefix of them).
struct Conversation {
    messages: Vec<Message>,
    first: usize,
}

impl Conversation {
    fn new(system: Option<&str>) -> Self {
        let messages: Vec<Message> = system
            .map(|s| Message::new("system", s))
            .into_iter()
            .collect();
        let first = messages.len();
        Conversation { messages, first }
    }

    /// Drops the last exchange (the last user message and what followed it).
    fn undo(&mut self) -> bool {
        match self.messages.iter().rposition(|m| m.role == "user") {
            Some(i) if i >= self.first => {
                self.messages.truncate(i);
                true
            }
            _ => false,
        }
    }
}

/// Whoever handles Ctrl-C: the reply in progress, or nobody (then Ctrl-C ends the program).
type Interrupt = Arc<Mutex<Option<CancelHandle>>>;

pub fn run(mut a: ChatArgs) -> edgemoe::Result<()> {
    a.model.context_length = Some(a.ctx);
    let model = Arc::new(a.model.load()?);
    let tokenizer = model.tokenizer()?;
    let template = match &a.template {
        Some(path) => ChatTemplate::from_file(path)?,
        None => ChatTemplate::from_model(&model, None).map_err(|e| {
            Error::Unsupported(format!("{e}; pass a template file with --template"))
        })?,
    };
    let mut session = Session::new(model.clone(), Some(a.ctx))?;
    let interrupt: Interrupt = Arc::new(Mutex::new(None));
    let handler = interrupt.clone();
    // Ctrl-C stops the reply in progress; between replies it ends the program.
    ctrlc::set_handler(move || match handler.lock().ok().and_then(|h| h.clone()) {
        Some(h) => h.cancel(),
        None => std::process::exit(130),
    })
    .map_err(|e| Error::InvalidArgument(format!("cannot handle Ctrl-C: {e}")))?;
    let mut conv = Conversation::new(a.system.as_deref());
    let special = SpecialTokens::from_model(&model);
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| Error::io(std::path::Path::new("<stdin>"), e))?;
        match line.trim() {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                conv = Conversation::new(a.system.as_deref());
                session.reset();
                eprintln!("[conversation reset]");
            }
            "/undo" => {
                let done = conv.undo();
                eprintln!(
                    "{}",
                    if done {
                        "[last exchange undone]"
                    } else {
                        "[nothing to undo]"
                    }
                );
            }
            text => {
                conv.messages.push(Message::new("user", text));
                let opts = RenderOptions {
                    add_generation_prompt: true,
                    bos_token: special.bos.clone(),
                    eos_token: special.eos.clone(),
                    ..Default::default()
                };
                let prompt = template.render(&conv.messages, &opts)?;
                let reply = turn(&a, tokenizer, &mut session, &prompt, &interrupt)?;
                conv.messages.push(Message::new("assistant", &reply));
            }
        }
    }
    Ok(())
}

/// One reply: evaluates what the prompt adds to the cached tokens (truncating the cache where
/// they differ, as after `/undo`), streams the reply to stdout and returns its text.
fn turn(
    a: &ChatArgs,
    tokenizer: &Tokenizer,
    session: &mut Session,
    prompt: &str,
    interrupt: &Interrupt,
) -> edgemoe::Result<String> {
    // The template writes any BOS itself.
    let ids = tokenizer.encode(prompt, false)?;
    let common = session
        .tokens()
        .iter()
        .zip(&ids)
        .take_while(|(a, b)| a == b)
        .count()
        .min(ids.len().saturating_sub(1));
    session.truncate(common);
    let params = GenerateParams {
        max_tokens: a.max_tokens,
        sampler: a.sampling.params(),
        stop: Vec::new(),
        add_bos: false,
    };
    let mut reply = String::new();
    let mut generated = Vec::new();
    let mut out = std::io::stdout().lock();
    set(interrupt, Some(session.cancel_handle()));
    let result = session.cancellable(|s| {
        generate_ids(
            s,
            tokenizer,
            &ids[common..],
            &params,
            &mut |text| {
                reply.push_str(text);
                let _ = write!(out, "{text}");
                let _ = out.flush();
                true
            },
            &mut generated,
        )
    });
    set(interrupt, None);
    let _ = writeln!(out);
    match result {
        Ok(stats) if stats.stop_reason == StopReason::ContextFull => {
            eprintln!("[the context is full: /reset or /undo]")
        }
        Ok(_) => {}
        Err(Error::Cancelled) => eprintln!("[stopped]"),
        Err(e) => return Err(e),
    }
    Ok(reply)
}

fn set(interrupt: &Interrupt, handle: Option<CancelHandle>) {
    if let Ok(mut h) = interrupt.lock() {
        *h = handle;
    }
}
