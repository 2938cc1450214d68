//! Episode returns: each worker's last 100, shared on the ps as rows
//! (global episode number, return), and the mean over the last 100
//! episodes of all workers together, found from the union of those logs.

use std::collections::VecDeque;

use crate::model::LOG_LEN;

/// This worker's last [`LOG_LEN`] episodes.
#[derive(Debug, Default)]
pub struct EpisodeLog {
    recent: VecDeque<(i64, f32)>,
}

impl EpisodeLog {
    /// Records episode number `n` (global, from the shared counter) with its return.
    pub fn push(&mut self, n: i64, ret: f32) {
        if self.recent.len() == LOG_LEN {
            self.recent.pop_front();
        }
        self.recent.push_back((n, ret));
    }

    /// The log as the ps holds it: `[LOG_LEN, 2]` row-major, unused rows (−1, −1).
    pub fn to_rows(&self) -> Vec<f32> {
        let mut rows = vec![-1.0f32; LOG_LEN * 2];
        for (i, &(n, ret)) in self.recent.iter().enumerate() {
            rows[2 * i] = n as f32;
            rows[2 * i + 1] = ret;
        }
        rows
    }

    /// This worker's own mean return over its last [`LOG_LEN`] episodes.
    pub fn own_mean(&self) -> Option<f32> {
        let n = self.recent.len();
        (n > 0).then(|| self.recent.iter().map(|&(_, r)| r).sum::<f32>() / n as f32)
    }

    /// The episodes in this log, as `(number, return)`.
    pub fn entries(&self) -> impl Iterator<Item = (i64, f32)> + '_ {
        self.recent.iter().copied()
    }
}

/// The `(number, return)` rows of a log fetched from the ps.
pub fn rows(flat: &[f32]) -> impl Iterator<Item = (i64, f32)> + '_ {
    flat.chunks_exact(2).filter(|r| r[0] >= 0.0).map(|r| (r[0] as i64, r[1]))
}

/// The mean return of the [`LOG_LEN`] highest-numbered episodes among
/// `entries`, or `None` while there are fewer than that. Since every worker
/// logs its own last [`LOG_LEN`] episodes, the union of the logs holds the
/// last [`LOG_LEN`] episodes of the whole run.
pub fn global_mean(entries: impl Iterator<Item = (i64, f32)>) -> Option<f32> {
    let mut all: Vec<(i64, f32)> = entries.collect();
    if all.len() < LOG_LEN {
        return None;
    }
    all.sort_unstable_by_key(|&(n, _)| std::cmp::Reverse(n));
    Some(all[..LOG_LEN].iter().map(|&(_, r)| r).sum::<f32>() / LOG_LEN as f32)
}
