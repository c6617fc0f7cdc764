//! What the web UI's History asks of a store beyond a run listing ([`super::RunQuery`]):
//! its extra filters, and a page whose count and text search are bounded.

use super::RunRecord;

/// History counts matching runs up to this many (or as far as the page asked for reaches):
/// an exact count of 100,000 runs costs more than the page itself.
pub const HISTORY_COUNT_BOUND: u64 = 10_000;

/// The text search reads at most this many runs (the newest that match the other filters):
/// payloads are not indexed, so a search is bounded instead (docs/ui.md).
pub const HISTORY_SEARCH_WINDOW: u64 = 10_000;

/// One page of History.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryPage {
    pub runs: Vec<RunRecord>,
    /// How many runs match: exact unless `more`.
    pub total: u64,
    /// More runs match than `total` counted (the count stopped at its bound).
    pub more: bool,
    /// With a text search that reached its window: the runs it read, the newest matching
    /// the other filters; older runs were not searched.
    pub searched: Option<u64>,
}

/// What the web UI's History filters by beyond a [`super::RunQuery`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryFilter {
    /// The trigger's `kind` (`api`, `cli`, `ui`, `webhook`, `schedule`, `poll`, `workflow`,
    /// `tool`).
    pub trigger_kind: Option<String>,
    /// Text searched for in the run's input and output (case-insensitive substring).
    pub search: Option<String>,
    /// Oldest first (the approvals inbox) instead of newest first.
    pub oldest_first: bool,
}

impl HistoryFilter {
    pub fn is_empty(&self) -> bool {
        self.trigger_kind.is_none() && self.search.is_none() && !self.oldest_first
    }
}
