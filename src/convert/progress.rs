//! Progress reports of long library operations (conversion, calibration).
//!
//! The library draws nothing: a caller that wants a progress display passes a [`ProgressFn`]
//! in the operation's options and draws from the [`Progress`] reports it receives (the
//! `edgemoe` command line draws terminal bars). Without one, the operation is silent.

use std::fmt;
use std::sync::Arc;

/// What a [`Progress`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressUnit {
    /// Steps of work (experts, windows, checks).
    Items,
    /// Bytes written.
    Bytes,
}

/// One report: how far a stage of an operation has come.
///
/// A stage's first report has `done == 0` and its last `done == total`; in between, `done`
/// never decreases. `total` may grow while a stage runs (when it is only learned on the way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress<'a> {
    /// The stage, e.g. `writing tensors`, `expert sensitivity`.
    pub stage: &'a str,
    /// What the stage is working on (a tensor name), or empty.
    pub item: &'a str,
    pub done: u64,
    pub total: u64,
    pub unit: ProgressUnit,
}

impl Progress<'_> {
    /// Whether this is the stage's last report.
    pub fn finished(&self) -> bool {
        self.done >= self.total
    }
}

/// Receives [`Progress`] reports (from the thread running the operation).
#[derive(Clone)]
pub struct ProgressFn(Arc<dyn Fn(Progress<'_>) + Send + Sync>);

impl ProgressFn {
    pub fn new(f: impl Fn(Progress<'_>) + Send + Sync + 'static) -> Self {
        ProgressFn(Arc::new(f))
    }

    /// Passes `p` to the callback.
    pub fn report(&self, p: Progress<'_>) {
        (self.0)(p)
    }
}

impl fmt::Debug for ProgressFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressFn(..)")
    }
}

/// The reports of one stage, for the library's loops; reports nothing without a callback.
pub(crate) struct Stage<'a> {
    sink: Option<&'a ProgressFn>,
    name: &'a str,
    unit: ProgressUnit,
    done: u64,
    total: u64,
}

impl<'a> Stage<'a> {
    /// Reports the start of stage `name` of `total` units.
    pub(crate) fn start(
        sink: Option<&'a ProgressFn>,
        name: &'a str,
        unit: ProgressUnit,
        total: u64,
    ) -> Self {
        let stage = Stage {
            sink,
            name,
            unit,
            done: 0,
            total,
        };
        stage.send("");
        stage
    }

    fn send(&self, item: &str) {
        if let Some(sink) = self.sink {
            sink.report(Progress {
                stage: self.name,
                item,
                done: self.done.min(self.total),
                total: self.total,
                unit: self.unit,
            });
        }
    }

    /// Names what the stage works on next.
    pub(crate) fn item(&self, item: &str) {
        // Below the total: the last report of a stage is `finish`'s.
        if self.done < self.total {
            self.send(item);
        }
    }

    /// `n` more units done.
    pub(crate) fn advance(&mut self, n: u64) {
        self.done += n;
        if self.done < self.total {
            self.send("");
        }
    }

    /// `done` of `total` units (a total learned on the way).
    pub(crate) fn set(&mut self, done: u64, total: u64) {
        self.total = total.max(1);
        self.done = done;
        if self.done < self.total {
            self.send("");
        }
    }

    /// Reports the end of the stage.
    pub(crate) fn finish(mut self) {
        self.done = self.total;
        self.send("");
    }
}
