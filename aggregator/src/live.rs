//! Tells watchers that records arrived, so that a coverage page redraws
//! without a reload. Only a count crosses: a watcher reads what changed
//! through the report routes, under their authorization.

use tokio::sync::watch;

pub struct Live {
    ingested: watch::Sender<u64>,
}

impl Default for Live {
    fn default() -> Live {
        Live {
            ingested: watch::Sender::new(0),
        }
    }
}

impl Live {
    /// Counts newly stored records; duplicates change nothing and wake no
    /// one.
    pub fn ingested(&self, accepted: usize) {
        if accepted > 0 {
            self.ingested.send_modify(|n| *n += accepted as u64);
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.ingested.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watcher_wakes_on_new_records_only() {
        let live = Live::default();
        let mut rx = live.subscribe();
        live.ingested(0);
        assert!(!rx.has_changed().unwrap());
        live.ingested(3);
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), 3);
    }
}
