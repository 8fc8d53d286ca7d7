//! Incremental decoding: ids in, whole UTF-8 characters out, with the concatenation equal to
//! [`Tokenizer::decode`] of all ids.
//!
//! The `tokenizers` decoders work on the whole id list, so streaming needs to know what the
//! decoder does. The common decoders are modelled exactly:
//!
//! * `ByteLevel` (GPT-2 style BPE): every token maps to raw bytes and the whole byte string
//!   is decoded with `from_utf8_lossy`; the stream holds back an incomplete trailing UTF-8
//!   sequence.
//! * `Sequence[Replace*, ByteFallback?, Fuse?, Strip?]` (SentencePiece BPE as converted by
//!   transformers): a run of consecutive `<0xNN>` tokens becomes its UTF-8 text if the whole
//!   run is valid UTF-8, otherwise one U+FFFD per byte, so the stream holds back a byte-token
//!   run until a text token (or the end) closes it; `Strip` removes leading spaces of the
//!   whole text once.
//! * `Metaspace`: `▁` becomes a space, except in the first token where it is dropped.
//!
//! Anything else falls back to re-decoding the whole sequence at each step.

use serde_json::Value;

use super::Tokenizer;
use crate::Result;

/// How a tokenizer's decoder turns tokens into text (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum DecodeKind {
    ByteLevel,
    Spm {
        /// `Replace` steps (literal pattern → content), applied per token in order.
        replace: Vec<(String, String)>,
        byte_fallback: bool,
        /// `Strip`: up to `n` leading `c` removed from the whole text.
        strip: Option<(char, usize)>,
    },
    Metaspace {
        replacement: char,
        /// Drop the replacement character in the first token (prepend scheme not `never`).
        strip_first: bool,
    },
    Generic,
}

/// What one id contributes to decoded text.
#[derive(Clone, Debug)]
pub(crate) enum Piece {
    /// The tokenizer has no token for the id: decoding skips it.
    Missing,
    /// A SentencePiece byte-fallback token `<0xNN>`.
    Byte(u8),
    /// Bytes (byte-level BPE) or text (the others) of the token.
    Text(Box<[u8]>),
}

/// The byte of a `<0xNN>` token, by the same test the `ByteFallback` decoder uses.
pub(crate) fn byte_token(token: &str) -> Option<u8> {
    if token.len() == 6 && token.starts_with("<0x") && token.ends_with('>') {
        u8::from_str_radix(token.get(3..5)?, 16).ok()
    } else {
        None
    }
}

/// GPT-2's byte ↔ printable-character table: the inverse maps a character back to its byte.
fn byte_level_char_to_byte() -> std::collections::HashMap<char, u8> {
    let mut map = std::collections::HashMap::with_capacity(256);
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
        map.insert(c, b);
    }
    map
}

impl DecodeKind {
    /// Recognises the decoder of `tk` from its serialised form.
    pub(crate) fn classify(tk: &tokenizers::Tokenizer) -> DecodeKind {
        let Some(dec) = tk.get_decoder() else {
            return DecodeKind::Generic;
        };
        let Ok(v) = serde_json::to_value(dec) else {
            return DecodeKind::Generic;
        };
        Self::from_json(&v).unwrap_or(DecodeKind::Generic)
    }

    fn from_json(v: &Value) -> Option<DecodeKind> {
        match v["type"].as_str()? {
            "ByteLevel" => Some(DecodeKind::ByteLevel),
            "Metaspace" => {
                let mut chars = v["replacement"].as_str()?.chars();
                let replacement = chars.next()?;
                if chars.next().is_some() {
                    return None;
                }
                let scheme = v["prepend_scheme"].as_str().unwrap_or("always");
                Some(DecodeKind::Metaspace {
                    replacement,
                    strip_first: scheme != "never",
                })
            }
            "Sequence" => {
                let steps = v["decoders"].as_array()?;
                if steps.len() == 1 && steps[0]["type"] == "ByteLevel" {
                    return Some(DecodeKind::ByteLevel);
                }
                let mut i = 0;
                let mut replace = Vec::new();
                while i < steps.len() && steps[i]["type"] == "Replace" {
                    let pattern = steps[i]["pattern"]["String"].as_str()?;
                    let content = steps[i]["content"].as_str()?;
                    if pattern.is_empty() {
                        return None;
                    }
                    replace.push((pattern.to_string(), content.to_string()));
                    i += 1;
                }
                let byte_fallback = steps.get(i).is_some_and(|s| s["type"] == "ByteFallback");
                i += usize::from(byte_fallback);
                let fuse = steps.get(i).is_some_and(|s| s["type"] == "Fuse");
                i += usize::from(fuse);
                let mut strip = None;
                if let Some(s) = steps.get(i).filter(|s| s["type"] == "Strip") {
                    // A per-token strip (no Fuse before it) or a trailing strip is not modelled.
                    if !fuse || s["stop"].as_u64() != Some(0) {
                        return None;
                    }
                    let mut c = s["content"].as_str()?.chars();
                    let content = c.next()?;
                    strip = Some((content, usize::try_from(s["start"].as_u64()?).ok()?));
                    i += 1;
                }
                (i == steps.len()).then_some(DecodeKind::Spm {
                    replace,
                    byte_fallback,
                    strip,
                })
            }
            _ => None,
        }
    }

    /// The per-id pieces for ids `0..n`.
    pub(crate) fn pieces(&self, tk: &tokenizers::Tokenizer, n: usize) -> Vec<Piece> {
        let byte_map = match self {
            DecodeKind::Generic => return Vec::new(),
            DecodeKind::ByteLevel => Some(byte_level_char_to_byte()),
            _ => None,
        };
        (0..n as u32)
            .map(|id| {
                let Some(token) = tk.id_to_token(id) else {
                    return Piece::Missing;
                };
                match self {
                    DecodeKind::ByteLevel => {
                        let map = byte_map.as_ref().expect("built above");
                        // As the ByteLevel decoder: mapped bytes if every char maps, else
                        // the token's own UTF-8.
                        let mapped: Option<Vec<u8>> =
                            token.chars().map(|c| map.get(&c).copied()).collect();
                        Piece::Text(mapped.unwrap_or_else(|| token.into_bytes()).into())
                    }
                    DecodeKind::Spm {
                        replace,
                        byte_fallback,
                        ..
                    } => {
                        let mut t = token;
                        for (p, c) in replace {
                            if t.contains(p.as_str()) {
                                t = t.replace(p.as_str(), c);
                            }
                        }
                        match byte_token(&t).filter(|_| *byte_fallback) {
                            Some(b) => Piece::Byte(b),
                            None => Piece::Text(t.into_bytes().into()),
                        }
                    }
                    _ => Piece::Text(token.into_bytes().into()),
                }
            })
            .collect()
    }

    /// The output bytes of one token on its own (for `token_to_piece`).
    pub(crate) fn piece_bytes(&self, text: &[u8]) -> Vec<u8> {
        match self {
            DecodeKind::Metaspace { replacement, .. } => String::from_utf8_lossy(text)
                .replace(*replacement, " ")
                .into_bytes(),
            _ => text.to_vec(),
        }
    }
}

/// Turns the ids of one generation into text as they arrive.
///
/// [`push`](Self::push) returns the text that became final with that id (always whole
/// characters; possibly empty), [`finish`](Self::finish) what was held back. Their
/// concatenation equals [`Tokenizer::decode`] of all pushed ids. Text is held back while it
/// could still change: an incomplete UTF-8 sequence, and for SentencePiece tokenizers a run
/// of byte tokens (`<0xNN>`) until a text token ends it, because the decoder turns a run with
/// any invalid byte into one U+FFFD per byte.
#[derive(Clone, Debug, Default)]
pub struct StreamDecoder {
    /// Byte-level: undecoded bytes (an incomplete UTF-8 tail). SentencePiece: the open run
    /// of byte tokens.
    pending: Vec<u8>,
    /// Leading-strip state: the character and how many may still be removed; `None` once
    /// something else has been emitted (or there is no strip).
    strip: Option<(char, usize)>,
    /// Whether a token has been decoded yet (strip set-up and Metaspace first-token rule).
    seen: bool,
    /// Fallback mode: all ids so far, the latest full decode and the text emitted.
    ids: Vec<u32>,
    latest: String,
    emitted: String,
}

impl StreamDecoder {
    /// A decoder for a new generation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `id`; returns the newly completed text. Errors on ids outside the vocabulary.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        tok.check_ids(&[id])?;
        let piece = tok.pieces.get(id as usize);
        match &tok.kind {
            DecodeKind::ByteLevel => {
                if let Some(Piece::Text(b)) = piece {
                    self.pending.extend_from_slice(b);
                }
                Ok(self.drain_utf8())
            }
            DecodeKind::Spm { strip, .. } => {
                if !self.seen {
                    self.seen = true;
                    self.strip = *strip;
                }
                match piece {
                    Some(Piece::Byte(b)) => {
                        self.pending.push(*b);
                        Ok(String::new())
                    }
                    Some(Piece::Text(t)) => {
                        let mut out = self.close_run();
                        out.push_str(&String::from_utf8_lossy(t));
                        Ok(self.apply_strip(out))
                    }
                    // Ids without a token are dropped before the decoder: a byte run goes on.
                    Some(Piece::Missing) | None => Ok(String::new()),
                }
            }
            DecodeKind::Metaspace {
                replacement,
                strip_first,
            } => match piece {
                Some(Piece::Text(t)) => {
                    let t = String::from_utf8_lossy(t);
                    let first = !self.seen;
                    self.seen = true;
                    Ok(if first && *strip_first {
                        t.replace(*replacement, "")
                    } else {
                        t.replace(*replacement, " ")
                    })
                }
                _ => Ok(String::new()),
            },
            DecodeKind::Generic => {
                self.ids.push(id);
                self.latest = tok.decode(&self.ids)?;
                // Emit only what extends the text already emitted, holding back a trailing
                // U+FFFD that a later token might still complete.
                match self.latest.strip_prefix(self.emitted.as_str()) {
                    Some(new) if !new.ends_with(char::REPLACEMENT_CHARACTER) => {
                        let new = new.to_string();
                        self.emitted.clone_from(&self.latest);
                        Ok(new)
                    }
                    _ => Ok(String::new()),
                }
            }
        }
    }

    /// Ends the generation: returns what was held back (invalid or incomplete bytes as
    /// U+FFFD) and resets the decoder for reuse.
    pub fn finish(&mut self) -> String {
        let out = if !self.ids.is_empty() {
            let rest = self.latest.strip_prefix(self.emitted.as_str());
            rest.unwrap_or_default().to_string()
        } else if self.strip.is_some() || self.seen {
            // SentencePiece: close the byte run (a no-op for the other kinds).
            let run = self.close_run();
            self.apply_strip(run)
        } else if self.pending.is_empty() {
            String::new()
        } else {
            // Byte-level: an incomplete sequence at the end is one U+FFFD, as from_utf8_lossy.
            self.drain_utf8() + "\u{FFFD}"
        };
        *self = StreamDecoder::default();
        out
    }

    /// Byte-level: decodes the complete part of `pending`, invalid sequences as U+FFFD.
    fn drain_utf8(&mut self) -> String {
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[start..start + valid])
                            .unwrap_or_default(),
                    );
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start += valid + n;
                        }
                        None => {
                            start += valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// SentencePiece: the text of the open byte-token run, as `ByteFallback` decodes it.
    fn close_run(&mut self) -> String {
        if self.pending.is_empty() {
            return String::new();
        }
        let run = std::mem::take(&mut self.pending);
        match String::from_utf8(run) {
            Ok(s) => s,
            Err(e) => "\u{FFFD}".repeat(e.as_bytes().len()),
        }
    }

    /// Removes leading strip characters until something else has been emitted.
    fn apply_strip(&mut self, mut text: String) -> String {
        let Some((c, left)) = self.strip else {
            return text;
        };
        let mut removed = 0;
        let mut done = false;
        for ch in text.chars() {
            if removed == left || ch != c {
                done = true;
                break;
            }
            removed += 1;
        }
        text.drain(..removed * c.len_utf8());
        self.strip = if done || removed == left {
            None
        } else {
            Some((c, left - removed))
        };
        text
    }
}
