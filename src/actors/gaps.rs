//! The result hub's bookkeeping per partition: which results it has delivered, and which it
//! must read from the step log because they never reached it.
//!
//! Results reach a node over two paths (the local broker, NATS) and NATS may lose some (a
//! publisher that died between its commit and its publication, a reconnection). Ids within a
//! partition are contiguous and follow commit order, so the tracker knows exactly what it
//! lacks: everything between the highest id it delivered contiguously (`seen`) and the
//! highest id it knows to be committed (a later result, a watermark, a takeover marker).
//! It asks for that range to be read from the log (a [`Fill`]) and holds the results that
//! arrive meanwhile, delivering them after the fill, in order. Ids it delivered already are
//! dropped, so a result arriving twice (both paths, or the log and then NATS) goes out once.
//!
//! No I/O here: the hub runs the fills and feeds their answers back.

use std::collections::{BTreeMap, HashMap};

use super::messages::ResultPublished;
use crate::domain::partition::PartitionId;
use crate::domain::purchase::PurchaseResult;
use crate::domain::trace::TraceContext;

/// Most log entries one fill reads; a longer gap takes several.
pub const FILL_PAGE: u64 = 512;

/// Most results held behind a fill per partition: past it they are let go (the fill reads
/// them from the log instead), so a long fill cannot grow the hub without bound.
const MAX_WAITING: usize = 4096;

/// A range of a partition's log to read: ids in `(after, upto]`, at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    pub partition: PartitionId,
    pub after: u64,
    pub upto: u64,
    pub limit: u64,
    /// Tells this fill's answer from a stale one (the partition was forgotten and tracked
    /// again meanwhile).
    ticket: u64,
}

/// What to deliver, in order, and the fill to run next (if any).
#[derive(Debug, Default)]
pub struct Delivery {
    pub results: Vec<ResultPublished>,
    /// How many of `results` came from the log.
    pub from_log: usize,
    pub fill: Option<Fill>,
}

#[derive(Debug)]
struct Track {
    /// The highest id delivered with everything before it.
    seen: u64,
    /// The highest id known to be committed.
    known: u64,
    /// Results above a gap, by id, waiting for the fill.
    waiting: BTreeMap<u64, ResultPublished>,
    /// The ticket of the fill in progress.
    filling: Option<u64>,
}

/// Every tracked partition's state.
#[derive(Debug, Default)]
pub struct Tracker {
    tracks: HashMap<PartitionId, Track>,
    tickets: u64,
}

impl Tracker {
    /// Starts tracking `partition` from `top` (its newest committed id when its first stream
    /// opened: what follows is news); a partition tracked already keeps its place.
    pub fn watch(&mut self, partition: PartitionId, top: u64) {
        self.tracks.entry(partition).or_insert(Track {
            seen: top,
            known: top,
            waiting: BTreeMap::new(),
            filling: None,
        });
    }

    /// Stops tracking `partition` (its last stream went away).
    pub fn forget(&mut self, partition: PartitionId) {
        self.tracks.remove(&partition);
    }

    /// Whether `partition` is tracked.
    pub fn tracks(&self, partition: PartitionId) -> bool {
        self.tracks.contains_key(&partition)
    }

    /// The tracked partitions.
    pub fn tracked(&self) -> Vec<PartitionId> {
        self.tracks.keys().copied().collect()
    }

    /// A result of `partition` arrived: deliver it now, drop it (delivered already), or hold
    /// it behind a fill of the gap before it. Results of untracked partitions are dropped.
    pub fn result(&mut self, partition: PartitionId, published: ResultPublished) -> Delivery {
        let Some(track) = self.tracks.get_mut(&partition) else {
            return Delivery::default();
        };
        let id = published.0.event_id;
        if id <= track.seen {
            return Delivery::default();
        }
        track.known = track.known.max(id);
        if track.filling.is_none() && id == track.seen + 1 {
            track.seen = id;
            return Delivery {
                results: vec![published],
                ..Delivery::default()
            };
        }
        if track.waiting.len() < MAX_WAITING {
            track.waiting.insert(id, published);
        }
        Delivery {
            fill: self.next_fill(partition),
            ..Delivery::default()
        }
    }

    /// `partition`'s log reaches `top` (a watermark, a takeover marker, a read of the
    /// store): anything above what was delivered is a gap to fill.
    pub fn top(&mut self, partition: PartitionId, top: u64) -> Option<Fill> {
        let track = self.tracks.get_mut(&partition)?;
        track.known = track.known.max(top);
        self.next_fill(partition)
    }

    /// A fill's answer: the log entries it read, in id order. Delivers them, then what
    /// waited behind them, and says what to read next.
    pub fn filled(&mut self, fill: Fill, read: Vec<PurchaseResult>) -> Delivery {
        let Some(track) = self.tracks.get_mut(&fill.partition) else {
            return Delivery::default();
        };
        if track.filling != Some(fill.ticket) {
            return Delivery::default();
        }
        track.filling = None;
        let mut delivery = Delivery::default();
        let full = read.len() as u64 >= fill.limit;
        for result in read {
            if result.event_id > track.seen && result.event_id <= fill.upto {
                track.seen = result.event_id;
                delivery
                    .results
                    .push(ResultPublished(result, TraceContext::NONE));
                delivery.from_log += 1;
            }
        }
        // A short read is the whole range: ids it lacks were pruned.
        if !full {
            track.seen = track.seen.max(fill.upto);
        }
        while let Some(entry) = track.waiting.first_entry() {
            let id = *entry.key();
            if id > track.seen + 1 {
                break;
            }
            let published = entry.remove();
            if id == track.seen + 1 {
                track.seen = id;
                delivery.results.push(published);
            }
        }
        delivery.fill = self.next_fill(fill.partition);
        delivery
    }

    /// A fill failed (the store is unavailable): the gap stays, to be filled by
    /// [`Tracker::retry`] later.
    pub fn failed(&mut self, fill: Fill) {
        if let Some(track) = self.tracks.get_mut(&fill.partition)
            && track.filling == Some(fill.ticket)
        {
            track.filling = None;
        }
    }

    /// Fills `partition`'s gap again, after a failure.
    pub fn retry(&mut self, partition: PartitionId) -> Option<Fill> {
        self.next_fill(partition)
    }

    /// The fill of the gap above `seen`, unless there is none or one is in progress: up to
    /// the first held result, or to the highest known id when none is held.
    fn next_fill(&mut self, partition: PartitionId) -> Option<Fill> {
        let track = self.tracks.get_mut(&partition)?;
        if track.filling.is_some() || track.known <= track.seen {
            return None;
        }
        let upto = match track.waiting.keys().next() {
            Some(&first) if first > track.seen + 1 => first - 1,
            // Held next in line (a fill failed under it): the read covers it too.
            _ => track.known,
        };
        self.tickets += 1;
        track.filling = Some(self.tickets);
        Some(Fill {
            partition,
            after: track.seen,
            upto,
            limit: FILL_PAGE,
            ticket: self.tickets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{CustomerId, PurchaseId};
    use crate::domain::purchase::{Step, StepEvent, StepStatus};

    const P: PartitionId = PartitionId(3);

    fn result(event_id: u64) -> PurchaseResult {
        PurchaseResult {
            event_id,
            purchase_id: PurchaseId(5),
            customer_id: CustomerId(1),
            event: StepEvent {
                step: Step::CreateOrder,
                status: StepStatus::Success,
            },
            timestamp: 1,
        }
    }

    fn published(event_id: u64) -> ResultPublished {
        ResultPublished(result(event_id), TraceContext::NONE)
    }

    fn ids(delivery: &Delivery) -> Vec<u64> {
        delivery.results.iter().map(|r| r.0.event_id).collect()
    }

    fn log(range: std::ops::RangeInclusive<u64>) -> Vec<PurchaseResult> {
        range.map(result).collect()
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut tracker = Tracker::default();
        tracker.watch(P, 0);
        assert_eq!(ids(&tracker.result(P, published(1))), [1]);
        // The same result by the other path, or again.
        let again = tracker.result(P, published(1));
        assert!(again.results.is_empty() && again.fill.is_none());
        assert_eq!(ids(&tracker.result(P, published(2))), [2]);
    }

    #[test]
    fn a_gap_is_filled_from_the_log_and_what_waited_follows_in_order() {
        let mut tracker = Tracker::default();
        tracker.watch(P, 0);
        assert_eq!(ids(&tracker.result(P, published(1))), [1]);
        // 2 and 3 went missing: 4 reveals them and waits.
        let gap = tracker.result(P, published(4));
        assert!(gap.results.is_empty());
        let fill = gap.fill.expect("a fill of the gap");
        assert_eq!((fill.partition, fill.after, fill.upto), (P, 1, 3));
        // While the fill runs, later results wait, and so does a late one of the gap.
        for id in [5, 2] {
            let held = tracker.result(P, published(id));
            assert!(held.results.is_empty() && held.fill.is_none(), "{id}");
        }
        let filled = tracker.filled(fill, log(2..=3));
        assert_eq!(ids(&filled), [2, 3, 4, 5]);
        assert_eq!(filled.from_log, 2);
        assert!(filled.fill.is_none());
        // The late copy of 3 still on its way is a duplicate now.
        assert!(tracker.result(P, published(3)).results.is_empty());
        assert_eq!(ids(&tracker.result(P, published(6))), [6]);
    }

    #[test]
    fn a_watermark_reveals_a_lost_tail() {
        let mut tracker = Tracker::default();
        tracker.watch(P, 10);
        assert_eq!(ids(&tracker.result(P, published(11))), [11]);
        // Nothing more arrives, but the publisher had published up to 13.
        let fill = tracker.top(P, 13).expect("a fill of the tail");
        assert_eq!((fill.after, fill.upto), (11, 13));
        assert_eq!(ids(&tracker.filled(fill, log(12..=13))), [12, 13]);
        assert!(tracker.top(P, 13).is_none(), "nothing left to fill");
        assert!(tracker.top(P, 12).is_none());
    }

    #[test]
    fn the_log_is_the_whole_range_even_when_entries_were_pruned() {
        let mut tracker = Tracker::default();
        tracker.watch(P, 1);
        let fill = tracker.top(P, 5).unwrap();
        // 2 to 4 are gone: the short read still covers up to 5.
        assert_eq!(ids(&tracker.filled(fill, log(5..=5))), [5]);
        assert_eq!(ids(&tracker.result(P, published(6))), [6]);
    }

    #[test]
    fn a_long_gap_is_read_a_page_at_a_time() {
        let mut tracker = Tracker::default();
        tracker.watch(P, 0);
        let first = tracker.top(P, FILL_PAGE + 10).unwrap();
        let page = tracker.filled(first, log(1..=FILL_PAGE));
        assert_eq!(page.results.len() as u64, FILL_PAGE);
        let second = page.fill.expect("the rest of the gap");
        assert_eq!((second.after, second.upto), (FILL_PAGE, FILL_PAGE + 10));
        let rest = tracker.filled(second, log(FILL_PAGE + 1..=FILL_PAGE + 10));
        assert_eq!(rest.results.len(), 10);
        assert!(rest.fill.is_none());
    }

    #[test]
    fn a_failed_fill_is_tried_again_and_a_stale_answer_ignored() {
        let mut tracker = Tracker::default();
        tracker.watch(P, 0);
        let fill = tracker.result(P, published(3)).fill.unwrap();
        tracker.failed(fill);
        let again = tracker.retry(P).expect("the same gap again");
        assert_eq!((again.after, again.upto), (0, 2));
        // The first attempt's answer, arriving late, changes nothing.
        assert!(tracker.filled(fill, log(1..=2)).results.is_empty());
        assert_eq!(ids(&tracker.filled(again, log(1..=2))), [1, 2, 3]);
    }

    #[test]
    fn untracked_partitions_are_ignored() {
        let mut tracker = Tracker::default();
        assert!(tracker.result(P, published(1)).results.is_empty());
        assert!(tracker.top(P, 9).is_none());
        tracker.watch(P, 0);
        let fill = tracker.top(P, 2).unwrap();
        // The partition's last stream went away, and a new one came back.
        tracker.forget(P);
        tracker.watch(P, 2);
        assert!(tracker.filled(fill, log(1..=2)).results.is_empty());
        assert_eq!(ids(&tracker.result(P, published(3))), [3]);
    }
}
