//! Joins the frames of a body into fewer, larger ones before they are
//! written to the client.
//!
//! The apiserver writes a list in chunks of 2 KiB, in TLS records of 4 KiB,
//! as fast as it encodes it; on a busy node a list of 50 Pods (208 KB) takes
//! it 100 ms. Written on as they came, they cost the client side a TLS
//! record and a `writev` each: 125 writes for the list, where nginx (which
//! fills a 16 KiB TLS buffer before it writes) made 14, and the sends were a
//! quarter of the interceptor's CPU.
//!
//! [`Coalesce`] holds what arrives until it has [`FLUSH_BYTES`], the body
//! ends, or its wait is over, whichever is first. The wait starts with the
//! first byte held, so no byte is late by more than it; a body that streams
//! (a watch) waits for nothing: it gets only a turn of the scheduler, in
//! which the task that reads the upstream can hand over what it has already
//! read (hyper hands a body over one frame at a time).

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// What is held before it is handed on without waiting for more: a TLS
/// record's worth.
pub const FLUSH_BYTES: usize = 16 * 1024;

pin_project! {
    pub struct Coalesce<B: Body> {
        #[pin]
        inner: B,
        held: Held,
        // What ended the data that is held: handed on after it.
        after: Option<After<B::Error>>,
        // How much was held when the reading task was last given a turn; a
        // turn that brings nothing starts the wait, or ends it.
        turn_at: Option<usize>,
        wait: Duration,
        // Made at the first wait, and set again for each later one.
        deadline: Option<Pin<Box<Sleep>>>,
        waiting: bool,
    }
}

enum Held {
    Nothing,
    // One frame is handed on as it came, without a copy.
    One(Bytes),
    Joined(BytesMut),
}

enum After<E> {
    End,
    Trailers(HeaderMap),
    Error(E),
}

impl Held {
    fn len(&self) -> usize {
        match self {
            Held::Nothing => 0,
            Held::One(b) => b.len(),
            Held::Joined(b) => b.len(),
        }
    }

    fn push(&mut self, data: Bytes) {
        *self = match std::mem::replace(self, Held::Nothing) {
            Held::Nothing => Held::One(data),
            Held::One(first) => {
                let mut joined = BytesMut::with_capacity(FLUSH_BYTES.max(first.len() + data.len()));
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&data);
                Held::Joined(joined)
            }
            Held::Joined(mut joined) => {
                joined.extend_from_slice(&data);
                Held::Joined(joined)
            }
        }
    }

    /// Holds what a poll of the body brought if it is data; otherwise
    /// what ended the data (its trailers, an error, the end). Other frames
    /// (http-body 1 has none) are passed over.
    fn take_in<E>(&mut self, polled: Option<Result<Frame<Bytes>, E>>) -> Option<After<E>> {
        match polled {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    self.push(data);
                    None
                }
                Err(frame) => frame.into_trailers().ok().map(After::Trailers),
            },
            Some(Err(e)) => Some(After::Error(e)),
            None => Some(After::End),
        }
    }

    fn take(&mut self) -> Bytes {
        match std::mem::replace(self, Held::Nothing) {
            Held::Nothing => Bytes::new(),
            Held::One(b) => b,
            Held::Joined(b) => b.freeze(),
        }
    }
}

impl<E> After<E> {
    fn into_poll(self) -> Polled<E> {
        Poll::Ready(match self {
            After::End => None,
            After::Trailers(trailers) => Some(Ok(Frame::trailers(trailers))),
            After::Error(e) => Some(Err(e)),
        })
    }
}

impl<B: Body> Coalesce<B> {
    /// `wait`: how long the first byte held may wait for more; zero for a
    /// body that streams.
    pub fn new(inner: B, wait: Duration) -> Self {
        Coalesce {
            inner,
            held: Held::Nothing,
            after: None,
            turn_at: None,
            wait,
            deadline: None,
            waiting: false,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Coalesce<B> {
    /// Waits for the body's first frame, and holds it to be handed on with
    /// what follows it (a body that is already holding something, or has
    /// ended, waits for nothing).
    pub async fn hold_first(&mut self) {
        if self.held.len() > 0 || self.after.is_some() || self.inner.is_end_stream() {
            return;
        }
        let polled = http_body_util::BodyExt::frame(&mut self.inner).await;
        self.after = self.held.take_in(polled);
    }
}

type Polled<E> = Poll<Option<Result<Frame<Bytes>, E>>>;

impl<B> Body for Coalesce<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled<B::Error> {
        let mut this = self.project();
        if let Some(after) = this.after.take() {
            return after.into_poll();
        }
        let ended = loop {
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(polled) => {
                    let ended = this.held.take_in(polled);
                    if ended.is_some() || this.held.len() >= FLUSH_BYTES {
                        break ended;
                    }
                }
                Poll::Pending => {
                    let held = this.held.len();
                    if held == 0 {
                        return Poll::Pending;
                    }
                    if *this.turn_at != Some(held) {
                        *this.turn_at = Some(held);
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    if this.wait.is_zero() {
                        break None;
                    }
                    if !*this.waiting {
                        *this.waiting = true;
                        let at = Instant::now() + *this.wait;
                        match this.deadline {
                            Some(deadline) => deadline.as_mut().reset(at),
                            None => *this.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
                        }
                    }
                    let deadline = this.deadline.as_mut().expect("set when the wait began");
                    if deadline.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    break None;
                }
            }
        };
        if this.held.len() == 0
            && let Some(ended) = ended
        {
            return ended.into_poll();
        }
        *this.after = ended;
        *this.turn_at = None;
        *this.waiting = false;
        Poll::Ready(Some(Ok(Frame::data(this.held.take()))))
    }

    fn is_end_stream(&self) -> bool {
        self.held.len() == 0
            && match self.after {
                Some(After::End) => true,
                Some(_) => false,
                None => self.inner.is_end_stream(),
            }
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.held.len() as u64;
        if matches!(self.after, Some(After::End)) {
            return SizeHint::with_exact(held);
        }
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// What a scripted body does when it is polled.
    enum Step {
        Data(Vec<u8>),
        // The next frame is not ready: the reading task must run first.
        NotReady,
        Trailers,
        Error,
    }

    /// Hands out its steps in order, as the upstream connection would.
    struct Scripted(VecDeque<Step>);

    impl Body for Scripted {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            Poll::Ready(match self.0.pop_front() {
                None => None,
                Some(Step::Data(d)) => Some(Ok(Frame::data(Bytes::from(d)))),
                Some(Step::NotReady) => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Some(Step::Trailers) => Some(Ok(Frame::trailers(HeaderMap::new()))),
                Some(Step::Error) => Some(Err("reset")),
            })
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// What the writer sees, polling until the end: `d:<text>` for data,
    /// `wait` for Pending, `trailers`, `error`.
    fn written(steps: Vec<Step>) -> Vec<String> {
        let mut body = std::pin::pin!(Coalesce::new(Scripted(steps.into()), Duration::ZERO));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut seen = Vec::new();
        for _ in 0..1000 {
            match body.as_mut().poll_frame(&mut cx) {
                Poll::Pending => seen.push("wait".to_string()),
                Poll::Ready(None) => return seen,
                Poll::Ready(Some(Err(e))) => seen.push(format!("error {e}")),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) => seen.push(format!("d:{}", String::from_utf8_lossy(&d))),
                    Err(_) => seen.push("trailers".to_string()),
                },
            }
        }
        panic!("the body did not end: {seen:?}");
    }

    fn data(text: &str) -> Step {
        Step::Data(text.as_bytes().to_vec())
    }

    #[test]
    fn frames_ready_together_go_out_as_one() {
        assert_eq!(
            written(vec![data("ab"), data("cd"), data("ef")]),
            ["d:abcdef"]
        );
    }

    #[test]
    fn a_turn_that_brings_data_is_followed_by_another() {
        use Step::NotReady;
        let steps = vec![data("ab"), NotReady, data("cd"), NotReady, data("ef")];
        assert_eq!(written(steps), ["wait", "wait", "d:abcdef"]);
    }

    #[test]
    fn a_turn_that_brings_nothing_hands_on_what_is_held() {
        use Step::NotReady;
        let steps = vec![data("ab"), NotReady, NotReady, NotReady, data("cd")];
        // One turn for the reader, then "ab" goes; nothing is held during
        // the next wait, which is the writer's to sit out.
        assert_eq!(written(steps), ["wait", "d:ab", "wait", "d:cd"]);
    }

    #[test]
    fn nothing_held_means_no_extra_turn() {
        use Step::NotReady;
        assert_eq!(written(vec![NotReady, data("ab")]), ["wait", "d:ab"]);
    }

    #[test]
    fn what_is_held_goes_out_once_it_reaches_a_record() {
        let chunk = "x".repeat(FLUSH_BYTES / 2 - 1);
        let steps = vec![data(&chunk), data(&chunk), data(&chunk), data("end")];
        let seen = written(steps);
        let sizes: Vec<usize> = seen.iter().map(|s| s.len() - 2).collect();
        assert_eq!(sizes, [3 * chunk.len(), 3]);
        // A frame at or above the mark is handed on as it came.
        let big = "y".repeat(FLUSH_BYTES + 5);
        assert_eq!(written(vec![data(&big), data("z")]).len(), 2);
    }

    #[test]
    fn the_end_trailers_and_errors_follow_the_data_they_ended() {
        assert_eq!(
            written(vec![data("ab"), data("cd"), Step::Trailers]),
            ["d:abcd", "trailers"]
        );
        assert_eq!(
            written(vec![data("ab"), Step::Error]),
            ["d:ab", "error reset"]
        );
        assert_eq!(written(vec![Step::Error]), ["error reset"]);
        assert_eq!(written(vec![Step::Trailers]), ["trailers"]);
        assert!(written(Vec::new()).is_empty());
    }

    /// As `written`, after `hold_first`.
    fn written_after_holding(steps: Vec<Step>) -> Vec<String> {
        let mut body = Coalesce::new(Scripted(steps.into()), Duration::ZERO);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut seen = Vec::new();
        {
            let mut holding = std::pin::pin!(body.hold_first());
            while holding.as_mut().poll(&mut cx).is_pending() {
                seen.push("wait".to_string());
            }
        }
        let mut body = std::pin::pin!(body);
        while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
            seen.push(match frame.map(Frame::into_data) {
                Ok(Ok(d)) => format!("d:{}", String::from_utf8_lossy(&d)),
                Ok(Err(_)) => "trailers".to_string(),
                Err(e) => format!("error {e}"),
            });
        }
        assert!(body.is_end_stream(), "{seen:?}");
        seen
    }

    #[test]
    fn the_first_frame_held_goes_out_first() {
        use Step::NotReady;
        let steps = vec![NotReady, data("ab"), data("cd")];
        assert_eq!(written_after_holding(steps), ["wait", "d:abcd"]);
        assert_eq!(written_after_holding(vec![data("ab")]), ["d:ab"]);
        let steps = vec![data("ab"), Step::Error];
        assert_eq!(written_after_holding(steps), ["d:ab", "error reset"]);
        assert_eq!(written_after_holding(vec![Step::Error]), ["error reset"]);
        assert_eq!(written_after_holding(vec![Step::Trailers]), ["trailers"]);
        assert!(written_after_holding(Vec::new()).is_empty());
    }

    #[test]
    fn the_end_is_known_once_the_last_data_is_handed_on() {
        let steps = vec![data("abc"), data("de")];
        let mut body = std::pin::pin!(Coalesce::new(Scripted(steps.into()), Duration::ZERO));
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().lower(), 0);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) else {
            panic!("the data was ready");
        };
        assert_eq!(frame.into_data().unwrap(), "abcde");
        assert!(body.is_end_stream(), "hyper may stop polling here");
        assert_eq!(body.size_hint().exact(), Some(0));
    }
}

#[cfg(test)]
mod waiting {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::mpsc;

    /// A body of what the test sends into `rx`, each send a frame.
    fn fed_body<T: Into<Bytes>>(
        mut rx: mpsc::Receiver<T>,
    ) -> impl Body<Data = Bytes, Error = std::convert::Infallible> {
        StreamBody::new(futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
                .map(|d| d.map(|d| Ok(Frame::data(d.into()))))
        }))
    }

    /// A body fed by the test, with the times each frame came out at.
    async fn frames_with_times(
        wait: Duration,
        feed: impl FnOnce(mpsc::Sender<&'static str>) -> tokio::task::JoinHandle<()>,
    ) -> Vec<(String, u128)> {
        let (tx, rx) = mpsc::channel::<&'static str>(16);
        let fed = feed(tx);
        let start = Instant::now();
        let mut body = Coalesce::new(fed_body(rx), wait);
        let mut seen = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            let text = String::from_utf8_lossy(&data).into_owned();
            seen.push((text, start.elapsed().as_millis()));
        }
        fed.await.unwrap();
        seen
    }

    fn pace(
        tx: mpsc::Sender<&'static str>,
        script: &'static [(u64, &'static str)],
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            for (after_ms, data) in script {
                tokio::time::sleep(Duration::from_millis(*after_ms)).await;
                tx.send(data).await.unwrap();
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_wait_for_more_until_the_wait_is_over() {
        let script = &[(0, "ab"), (3, "cd"), (20, "ef"), (2, "gh")];
        let seen = frames_with_times(Duration::from_millis(10), |tx| pace(tx, script)).await;
        // "ab" waited its 10 ms and took "cd" along; "ef" waited until the
        // body ended, which does not wait.
        let want = [("abcd".to_string(), 10), ("efgh".to_string(), 25)];
        assert_eq!(seen, want);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_wait_bytes_go_as_they_come() {
        let script = &[(0, "ab"), (3, "cd"), (20, "ef")];
        let seen = frames_with_times(Duration::ZERO, |tx| pace(tx, script)).await;
        let want = [
            ("ab".to_string(), 0),
            ("cd".to_string(), 3),
            ("ef".to_string(), 23),
        ];
        assert_eq!(seen, want);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_record_does_not_wait() {
        let (tx, rx) = mpsc::channel::<String>(4);
        tx.send("x".repeat(FLUSH_BYTES)).await.unwrap();
        let mut body = Coalesce::new(fed_body(rx), Duration::from_secs(60));
        let start = Instant::now();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap().len(), FLUSH_BYTES);
        assert_eq!(start.elapsed(), Duration::ZERO);
        drop(tx);
        assert!(body.frame().await.is_none());
    }
}

#[cfg(test)]
mod over_hyper {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use hyper_util::rt::TokioIo;

    /// An upstream that writes 64 chunks of 2 KiB at once, read through
    /// hyper's client as the proxy reads the apiserver: the frames reach
    /// the writer joined.
    #[tokio::test(flavor = "current_thread")]
    async fn chunks_that_arrive_together_are_joined() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(|_req| async {
                let chunks = (0..64).map(|i| {
                    Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![
                        b'a' + (i % 26)
                            as u8;
                        2048
                    ])))
                });
                Ok::<_, std::convert::Infallible>(http::Response::new(StreamBody::new(
                    futures_util::stream::iter(chunks),
                )))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let response = sender
            .send_request(http::Request::new(http_body_util::Empty::<Bytes>::new()))
            .await
            .unwrap();
        // Let the whole body reach the socket first.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut body = Coalesce::new(response.into_body(), Duration::ZERO);
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap().into_data().unwrap().len());
        }
        assert_eq!(frames.iter().sum::<usize>(), 64 * 2048);
        assert!(frames.len() <= 10, "{frames:?}");
    }
}
