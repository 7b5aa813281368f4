//! The account of records the queue had to drop, and the reports that tell
//! the aggregator about them.
//!
//! The aggregator counts a report once by its id. A report whose batch was
//! sent but whose answer never came may have been stored: it is sent again
//! as it was, same id, so a stored one is not counted twice. Only a report
//! that surely was not stored (the aggregator refused the batch, or was
//! never reached) goes back into the running count, to be reported anew.

use apiwitness_record::{DropReport, FORMAT_PLAIN, PodIdentity};
use std::sync::Mutex;
use std::time::SystemTime;

/// Reports kept whole while their fate is unknown. Each lost answer adds at
/// most one; past this many (an aggregator that takes batches and never
/// answers, for hours), the oldest is folded into the running count.
const MAX_UNACKNOWLEDGED: usize = 64;

#[derive(Default)]
struct Ledger {
    count: u64,
    first: Option<SystemTime>,
    last: Option<SystemTime>,
    /// Sent, and maybe stored: only ever sent again as they are.
    unacknowledged: Vec<DropReport>,
}

impl Ledger {
    fn add(&mut self, count: u64, first: SystemTime, last: SystemTime) {
        self.count += count;
        self.first = Some(self.first.map_or(first, |f| f.min(first)));
        self.last = Some(self.last.map_or(last, |l| l.max(last)));
    }

    /// A report's drops back into the running count, to be reported anew.
    fn recount(&mut self, report: &DropReport) {
        self.add(
            report.dropped,
            parse_time(&report.first_dropped_at),
            parse_time(&report.last_dropped_at),
        );
    }
}

#[derive(Default)]
pub struct Drops {
    ledger: Mutex<Ledger>,
}

/// The reports that go with one batch.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Reports {
    /// Sent before, answer lost: as they were.
    pub resent: Vec<DropReport>,
    /// The drops since the last report, under a new id.
    pub new: Option<DropReport>,
}

impl Reports {
    pub fn iter(&self) -> impl Iterator<Item = &DropReport> {
        self.resent.iter().chain(&self.new)
    }

    pub fn is_empty(&self) -> bool {
        self.resent.is_empty() && self.new.is_none()
    }
}

/// What became of a batch that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The aggregator refused it, or was never reached: nothing was stored.
    NotStored,
    /// It was sent and no answer came: it may have been stored.
    AnswerLost,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

fn parse_time(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap_or_else(|_| SystemTime::now())
}

impl Drops {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn note(&self, count: u64, at: SystemTime) {
        if count > 0 {
            self.ledger().add(count, at, at);
        }
    }

    /// Whether anything is left to report.
    pub fn pending(&self) -> bool {
        let ledger = self.ledger();
        ledger.count > 0 || !ledger.unacknowledged.is_empty()
    }

    /// The drops not yet reported, and those not yet counted under a new id.
    pub fn count(&self) -> u64 {
        let ledger = self.ledger();
        ledger.count + ledger.unacknowledged.iter().map(|r| r.dropped).sum::<u64>()
    }

    /// Takes everything to report with the next batch.
    pub fn take(&self, pod: &PodIdentity) -> Reports {
        let mut ledger = self.ledger();
        let new = (ledger.count > 0).then(|| DropReport {
            format: FORMAT_PLAIN,
            id: uuid::Uuid::new_v4().to_string(),
            pod: pod.clone(),
            dropped: ledger.count,
            first_dropped_at: rfc3339(ledger.first.unwrap_or_else(SystemTime::now)),
            last_dropped_at: rfc3339(ledger.last.unwrap_or_else(SystemTime::now)),
        });
        ledger.count = 0;
        ledger.first = None;
        ledger.last = None;
        Reports {
            resent: std::mem::take(&mut ledger.unacknowledged),
            new,
        }
    }

    /// The batch that carried `reports` failed.
    pub fn give_back(&self, reports: Reports, failure: Failure) {
        let mut ledger = self.ledger();
        let Reports { resent, new } = reports;
        // Sent before with a lost answer: still maybe stored, whatever
        // became of this batch.
        ledger.unacknowledged.splice(0..0, resent);
        if let Some(report) = new {
            match failure {
                Failure::AnswerLost => ledger.unacknowledged.push(report),
                Failure::NotStored => ledger.recount(&report),
            }
        }
        let excess = ledger
            .unacknowledged
            .len()
            .saturating_sub(MAX_UNACKNOWLEDGED);
        for report in ledger.unacknowledged.drain(..excess).collect::<Vec<_>>() {
            tracing::warn!(
                dropped = report.dropped,
                "too many drop reports await an answer: the oldest is counted again, and may be counted twice"
            );
            ledger.recount(&report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pod() -> PodIdentity {
        PodIdentity {
            namespace: "ns".into(),
            name: "web-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_report_whose_answer_was_lost_is_sent_again_under_the_same_id() {
        let drops = Drops::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        drops.note(3, t0);
        let first = drops.take(&pod());
        let sent = first.new.clone().unwrap();
        assert_eq!(sent.dropped, 3);
        drops.give_back(first, Failure::AnswerLost);
        // More drops meanwhile: their own report, beside the first.
        drops.note(2, t0 + Duration::from_secs(5));
        let again = drops.take(&pod());
        assert_eq!(again.resent, std::slice::from_ref(&sent));
        assert_eq!(again.new.as_ref().map(|r| r.dropped), Some(2));
        assert_ne!(again.new.as_ref().unwrap().id, sent.id);
        // Refused outright: the new one was surely not stored and goes back
        // into the count; the first may have been, and stays whole.
        drops.give_back(again, Failure::NotStored);
        assert_eq!(drops.count(), 5);
        let third = drops.take(&pod());
        assert_eq!(third.resent, [sent]);
        let recounted = third.new.unwrap();
        assert_eq!(recounted.dropped, 2);
        assert_eq!(
            recounted.first_dropped_at,
            rfc3339(t0 + Duration::from_secs(5))
        );
        assert!(!drops.pending());
        assert!(drops.take(&pod()).is_empty());
    }

    #[test]
    fn a_batch_that_was_surely_not_stored_is_reported_anew_in_one_report() {
        let drops = Drops::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        drops.note(4, t0);
        let reports = drops.take(&pod());
        drops.note(1, t0 + Duration::from_secs(60));
        drops.give_back(reports, Failure::NotStored);
        let next = drops.take(&pod()).new.unwrap();
        assert_eq!(next.dropped, 5);
        assert_eq!(next.first_dropped_at, rfc3339(t0));
        assert_eq!(next.last_dropped_at, rfc3339(t0 + Duration::from_secs(60)));
    }

    #[test]
    fn reports_awaiting_an_answer_are_bounded() {
        let drops = Drops::default();
        let now = SystemTime::now();
        for _ in 0..MAX_UNACKNOWLEDGED + 3 {
            drops.note(1, now);
            let reports = drops.take(&pod());
            drops.give_back(reports, Failure::AnswerLost);
        }
        let reports = drops.take(&pod());
        assert_eq!(reports.resent.len(), MAX_UNACKNOWLEDGED);
        // Every drop is in some report still.
        let reported: u64 = reports.iter().map(|r| r.dropped).sum();
        assert_eq!(reported, MAX_UNACKNOWLEDGED as u64 + 3);
    }
}
