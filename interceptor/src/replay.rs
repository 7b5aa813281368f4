//! A request body that can be sent to the apiserver again from its start,
//! for a write the apiserver refused without processing it (a GOAWAY its
//! stream was past, REFUSED_STREAM).
//!
//! By the time the refusal comes, hyper has read some of the body, or all
//! of it, and dropped what it held. So the body keeps a tape of what was
//! read (each frame's bytes, shared, not copied), and the rest stays
//! unread in the client's stream, shared between the body that was sent
//! and the one sent again, which plays the tape and then reads on. A body
//! longer than [`REPLAY_LIMIT`] keeps no tape; once the apiserver has
//! answered, the tape is let go.

use crate::proxy::ProxyBody;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

/// The longest body kept to be sent again. The apiserver refuses bodies
/// over 3 MiB; a write is most often a few KiB.
pub const REPLAY_LIMIT: usize = 1024 * 1024;

struct Tape {
    /// What has not been read yet.
    unread: ProxyBody,
    /// The data read so far, in order, while it can still be sent again.
    data: Vec<Bytes>,
    bytes: usize,
    trailers: Option<HeaderMap>,
    ended: bool,
    /// The body grew past the limit, or the apiserver answered: no tape.
    unkept: bool,
    /// Which of the bodies made from the tape reads it: an earlier one,
    /// still held by a stream being torn down, must not take the client's
    /// next frame, nor its wake-up.
    current: u32,
}

/// One sending of the body: a place on the tape, then the unread rest.
pub struct ReplayBody {
    tape: Arc<Mutex<Tape>>,
    generation: u32,
    /// The next of the tape's frames to play.
    at: usize,
    /// Whether the trailers on the tape were played.
    trailers_played: bool,
}

/// What can make the body again, until it is dropped.
pub struct Replay {
    tape: Arc<Mutex<Tape>>,
}

/// `body` as one that [`Replay::again`] can make anew.
pub fn replayable(body: ProxyBody) -> (ReplayBody, Replay) {
    let tape = Arc::new(Mutex::new(Tape {
        unread: body,
        data: Vec::new(),
        bytes: 0,
        trailers: None,
        ended: false,
        unkept: false,
        current: 0,
    }));
    let first = ReplayBody {
        tape: tape.clone(),
        generation: 0,
        at: 0,
        trailers_played: false,
    };
    (first, Replay { tape })
}

fn lock(tape: &Mutex<Tape>) -> MutexGuard<'_, Tape> {
    tape.lock().unwrap_or_else(|e| e.into_inner())
}

impl Replay {
    /// The body from its start, unless it was too long to keep.
    pub fn again(&self) -> Option<ReplayBody> {
        let mut tape = lock(&self.tape);
        if tape.unkept {
            return None;
        }
        tape.current += 1;
        Some(ReplayBody {
            tape: self.tape.clone(),
            generation: tape.current,
            at: 0,
            trailers_played: false,
        })
    }
}

impl Drop for Replay {
    /// The apiserver answered, or the request failed for good: what is
    /// read from here on passes through without being kept.
    fn drop(&mut self) {
        let mut tape = lock(&self.tape);
        tape.unkept = true;
        tape.data = Vec::new();
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let mut tape = lock(&this.tape);
        if tape.current != this.generation {
            // Sent again since: this sending is over.
            return Poll::Ready(None);
        }
        if let Some(data) = tape.data.get(this.at) {
            this.at += 1;
            return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
        }
        if tape.ended {
            if !this.trailers_played
                && let Some(trailers) = &tape.trailers
            {
                this.trailers_played = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))));
            }
            return Poll::Ready(None);
        }
        let polled = std::task::ready!(Pin::new(&mut tape.unread).poll_frame(cx));
        let tape = &mut *tape;
        match &polled {
            None => tape.ended = true,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    tape.bytes += data.len();
                    if tape.bytes > REPLAY_LIMIT {
                        tape.unkept = true;
                        tape.data = Vec::new();
                    }
                    if !tape.unkept {
                        tape.data.push(data.clone());
                        this.at += 1;
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    tape.ended = true;
                    tape.trailers = Some(trailers.clone());
                    this.trailers_played = true;
                }
            }
            // The client's body broke: no sending of it can succeed.
            Some(Err(_)) => tape.unkept = true,
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        let tape = lock(&self.tape);
        tape.current != self.generation
            || (self.at >= tape.data.len()
                && tape.ended
                && (self.trailers_played || tape.trailers.is_none()))
    }

    fn size_hint(&self) -> SizeHint {
        let tape = lock(&self.tape);
        let played: u64 = tape.data[self.at.min(tape.data.len())..]
            .iter()
            .map(|d| d.len() as u64)
            .sum();
        if tape.ended {
            return SizeHint::with_exact(played);
        }
        let unread = tape.unread.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(played + unread.lower());
        if let Some(upper) = unread.upper() {
            hint.set_upper(played + upper);
        }
        hint
    }
}

impl ReplayBody {
    pub fn boxed(self) -> ProxyBody {
        BodyExt::boxed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn body_of(frames: Vec<Frame<Bytes>>) -> ProxyBody {
        let frames = frames.into_iter().map(Ok::<_, std::convert::Infallible>);
        StreamBody::new(futures_util::stream::iter(frames))
            .map_err(|never| match never {})
            .boxed()
    }

    async fn read_all(body: ReplayBody) -> (Vec<u8>, Option<HeaderMap>) {
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes().to_vec(), trailers)
    }

    #[tokio::test]
    async fn a_body_read_in_part_is_sent_again_whole_and_its_rest_once() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-end", "1".parse().unwrap());
        let (mut first, replay) = replayable(body_of(vec![
            Frame::data(Bytes::from_static(b"ab")),
            Frame::data(Bytes::from_static(b"cd")),
            Frame::data(Bytes::from_static(b"ef")),
            Frame::trailers(trailers.clone()),
        ]));
        // The refused sending read two frames.
        let one = first.frame().await.unwrap().unwrap();
        assert_eq!(one.data_ref().unwrap(), &Bytes::from_static(b"ab"));
        first.frame().await.unwrap().unwrap();
        let second = replay.again().unwrap();
        // The first sending is over once there is a second.
        assert!(first.frame().await.is_none());
        assert_eq!(
            read_all(second).await,
            (b"abcdef".to_vec(), Some(trailers.clone()))
        );
        // And a third plays all of it from the tape.
        let third = replay.again().unwrap();
        assert_eq!(third.size_hint().exact(), Some(6));
        assert_eq!(read_all(third).await, (b"abcdef".to_vec(), Some(trailers)));
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_not_kept() {
        let big = Bytes::from(vec![b'x'; REPLAY_LIMIT + 1]);
        let (first, replay) = replayable(
            Full::new(big.clone())
                .map_err(|never| match never {})
                .boxed(),
        );
        assert_eq!(read_all(first).await.0.len(), big.len());
        assert!(replay.again().is_none());
    }

    #[tokio::test]
    async fn once_answered_nothing_more_is_kept() {
        let (mut first, replay) = replayable(body_of(vec![
            Frame::data(Bytes::from_static(b"ab")),
            Frame::data(Bytes::from_static(b"cd")),
        ]));
        first.frame().await.unwrap().unwrap();
        let tape = first.tape.clone();
        drop(replay);
        first.frame().await.unwrap().unwrap();
        assert!(first.frame().await.is_none());
        assert!(lock(&tape).data.is_empty());
    }
}
