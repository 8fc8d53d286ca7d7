//! Stop strings over streamed text.

/// What [`StopStrings::push`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopOutcome {
    /// Text that is safe to emit now (never part of a stop string).
    pub emit: String,
    /// Index (in the list given to [`StopStrings::new`]) of the stop string that matched, if
    /// one did; generation should end and nothing after `emit` be shown.
    pub stop: Option<usize>,
}

/// Watches generated text for stop strings, which may arrive split across pieces.
///
/// Text that could still turn out to be the start of a stop string is held back until it
/// either completes one or can no longer do so. Once a stop string matched, further pushes
/// emit nothing.
#[derive(Clone, Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    /// Text received but not emitted yet (a suffix that is a prefix of some stop string).
    pending: String,
    stopped: Option<usize>,
}

impl StopStrings {
    /// Watches for `stops` (empty strings are ignored).
    pub fn new<I, S>(stops: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        StopStrings {
            stops: stops.into_iter().map(Into::into).collect(),
            pending: String::new(),
            stopped: None,
        }
    }

    /// The stop string that matched, if any.
    pub fn stopped(&self) -> Option<usize> {
        self.stopped
    }

    /// Adds generated text. Returns what may be emitted now and whether a stop string
    /// matched: the earliest match in the text (the shorter string when two start at the
    /// same place); the text before it is emitted, the rest dropped.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stopped.is_some() {
            return StopOutcome::default();
        }
        self.pending.push_str(text);
        let found = self
            .stops
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .filter_map(|(i, s)| self.pending.find(s.as_str()).map(|at| (at, s.len(), i)))
            .min();
        if let Some((at, _, i)) = found {
            self.pending.truncate(at);
            self.stopped = Some(i);
            return StopOutcome {
                emit: std::mem::take(&mut self.pending),
                stop: Some(i),
            };
        }
        // Hold back the longest suffix that is a proper prefix of a stop string. Such a
        // prefix starts on a character boundary of the stop string, hence of `pending`.
        let mut keep = 0;
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if i > keep && self.pending.ends_with(&s[..i]) {
                    keep = i;
                }
            }
        }
        let cut = self.pending.len() - keep;
        let emit = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopOutcome { emit, stop: None }
    }

    /// The end of generation: returns the held-back text (nothing after a stop) and resets.
    pub fn finish(&mut self) -> String {
        let out = if self.stopped.is_some() {
            String::new()
        } else {
            std::mem::take(&mut self.pending)
        };
        self.pending.clear();
        self.stopped = None;
        out
    }
}
