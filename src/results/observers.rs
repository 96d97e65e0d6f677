//! Several observers of one run as one: the progress line, the live logs (`--hdr-log`,
//! `--csv`) and exporters each see every second, in the order they were added.

use crate::metrics::run::{Observer, Tick};

/// Observers called one after another; an [`Observer`] itself.
#[derive(Default)]
pub struct Observers<'a>(Vec<&'a mut dyn Observer>);

impl<'a> Observers<'a> {
    /// No observers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `o`: it is called after those added before it.
    pub fn push(&mut self, o: &'a mut dyn Observer) {
        self.0.push(o);
    }
}

impl Observer for Observers<'_> {
    fn started(&mut self, epoch_unix_us: u64) {
        for o in &mut self.0 {
            o.started(epoch_unix_us);
        }
    }

    fn tick(&mut self, tick: &Tick<'_>) {
        for o in &mut self.0 {
            o.tick(tick);
        }
    }

    fn finish(&mut self) {
        for o in &mut self.0 {
            o.finish();
        }
    }
}
