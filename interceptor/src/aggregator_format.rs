//! The newest record format the aggregator reads, as the sidecar knows it.
//!
//! It starts at `--aggregator-format`. An aggregator states its format in
//! every answer to a batch (`apiwitness_record::FORMAT_HEADER`), and the
//! sidecar follows it. One older than that header states nothing: when it
//! cannot read a line of format F, the sidecar takes it to read formats
//! below F only. The recorder reads the format for each record, so that
//! the records made after a refusal are made for that aggregator; the
//! refused line itself is written again at format 2 by the shipper.

use crate::decode::Decoding;
use apiwitness_record::{FORMAT_PLAIN, FORMAT_VERSION};
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug)]
pub struct AggregatorFormat(AtomicU32);

impl AggregatorFormat {
    pub fn new(format: u32) -> AggregatorFormat {
        AggregatorFormat(AtomicU32::new(format.clamp(FORMAT_PLAIN, FORMAT_VERSION)))
    }

    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// Where the recorder decodes each kind of body, for this format.
    pub fn decoding(&self) -> Decoding {
        Decoding::for_aggregator_format(self.get())
    }

    /// The aggregator stated the newest format it reads (a newer one than
    /// this sidecar's counts as this sidecar's). Returns the format before,
    /// where this changed it.
    pub fn stated(&self, format: u32) -> Option<u32> {
        let format = format.clamp(FORMAT_PLAIN, FORMAT_VERSION);
        let before = self.0.swap(format, Ordering::Relaxed);
        (before != format).then_some(before)
    }

    /// The aggregator could not read a line of `format`. Returns the format
    /// before, where this lowered it: a line of format 2, which every
    /// aggregator reads, or of a format already below this one, says
    /// nothing of the format.
    pub fn refused(&self, format: u32) -> Option<u32> {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                (format > FORMAT_PLAIN && format <= current).then_some(format - 1)
            })
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apiwitness_record::{FORMAT_GZIP, FORMAT_NEXT_LINE};

    #[test]
    fn a_refusal_lowers_the_format_below_the_refused_line_s_and_a_statement_sets_it() {
        let format = AggregatorFormat::new(FORMAT_VERSION);
        assert_eq!(format.refused(FORMAT_PLAIN), None);
        assert_eq!(format.get(), FORMAT_VERSION);
        assert_eq!(format.refused(FORMAT_NEXT_LINE), Some(FORMAT_VERSION));
        assert_eq!(format.get(), FORMAT_NEXT_LINE - 1);
        // A line made before the first refusal, refused after it.
        assert_eq!(format.refused(FORMAT_NEXT_LINE), None);
        assert_eq!(format.get(), FORMAT_GZIP);
        assert_eq!(format.refused(FORMAT_GZIP), Some(FORMAT_GZIP));
        assert_eq!(format.get(), FORMAT_PLAIN);
        assert_eq!(format.refused(FORMAT_GZIP), None);
        assert_eq!(format.get(), FORMAT_PLAIN);

        assert_eq!(format.stated(FORMAT_VERSION), Some(FORMAT_PLAIN));
        assert_eq!(format.stated(FORMAT_VERSION), None);
        assert_eq!(format.stated(FORMAT_VERSION + 7), None);
        assert_eq!(format.get(), FORMAT_VERSION);
        assert_eq!(format.stated(0), Some(FORMAT_VERSION));
        assert_eq!(format.get(), FORMAT_PLAIN);
        assert_eq!(AggregatorFormat::new(1).get(), FORMAT_PLAIN);
    }
}
