//! Progress reports of long library operations (conversion, calibration).
//!
//! The library draws nothing: a caller that wants a progress display passes a [`ProgressFn`]
//! in the operation's options and draws from the [`Progress`] reports it receives (the
//! `edgemoe` command line draws terminal bars). Without one, the operation is silent.

#![forbid(unsafe_code)]

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// (stage, item, done, total) of every report.
    type Log = Arc<Mutex<Vec<(String, String, u64, u64)>>>;

    fn recorder() -> (ProgressFn, Log) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let f = ProgressFn::new(move |p| {
            sink.lock()
                .unwrap()
                .push((p.stage.to_string(), p.item.to_string(), p.done, p.total))
        });
        (f, log)
    }

    #[test]
    fn a_stage_starts_at_zero_ends_at_its_total_and_finishes_once() {
        let (f, log) = recorder();
        let mut s = Stage::start(Some(&f), "writing", ProgressUnit::Bytes, 10);
        s.item("a");
        s.advance(4);
        s.item("b");
        s.advance(6);
        s.item("c"); // past the total: no report before `finish`
        s.finish();
        let log = log.lock().unwrap();
        let seen: Vec<(&str, u64)> = log.iter().map(|r| (r.1.as_str(), r.2)).collect();
        assert_eq!(
            seen,
            [("", 0), ("a", 0), ("", 4), ("b", 4), ("", 10)],
            "{log:?}"
        );
        assert_eq!(log.iter().filter(|r| r.2 >= r.3).count(), 1);
    }

    #[test]
    fn a_total_learned_on_the_way_and_no_callback() {
        let (f, log) = recorder();
        let mut s = Stage::start(Some(&f), "baseline", ProgressUnit::Items, 1);
        s.set(1, 3);
        s.set(3, 3); // the end is `finish`'s to report
        s.finish();
        let totals: Vec<(u64, u64)> = log.lock().unwrap().iter().map(|r| (r.2, r.3)).collect();
        assert_eq!(totals, [(0, 1), (1, 3), (3, 3)]);
        // Without a callback, nothing is reported and nothing fails.
        let mut s = Stage::start(None, "silent", ProgressUnit::Items, 2);
        s.advance(1);
        s.finish();
    }
}
