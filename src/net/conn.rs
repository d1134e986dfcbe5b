//! A served connection under its listener's limits: [`Limited`] wraps any
//! stream tonic can serve, holds the connection's [`Admission`], and ends the
//! connection once no request has been in flight for the idle timeout. The
//! [`InFlightLayer`] on the tonic server counts requests per connection and
//! hands handlers the inner stream's connect info unchanged, so what a
//! handler reads about its peer does not depend on this wrapper.

use super::limits::{Admission, Limits};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;
use tower::layer::util::{Identity, Stack};

/// A bearer credential presented with a request (`authorization: Bearer
/// …`), moved out of the headers as the request arrives so that nothing
/// downstream (tonic's metadata, a log of headers) keeps a copy; the gate
/// reads it from the request's extensions.
#[derive(Clone)]
pub struct Bearer(pub Arc<crate::secret::Secret>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(..)")
    }
}

impl Bearer {
    /// Takes `header` (`authorization` with the `Bearer ` scheme, or a
    /// scheme-less header such as `x-vault-token`) out of `req`'s headers
    /// into its extensions. A header that is not the scheme is left alone.
    pub fn take<B>(req: &mut http::Request<B>, header: &str, scheme: Option<&str>) {
        let Some(value) = req.headers().get(header) else {
            return;
        };
        let bytes = value.as_bytes();
        let token = match scheme {
            Some(scheme) => {
                // The scheme is case-insensitive (RFC 9110 §11.1).
                let n = scheme.len();
                match (bytes.get(..n), bytes.get(n)) {
                    (Some(s), Some(b' ')) if s.eq_ignore_ascii_case(scheme.as_bytes()) => {
                        bytes.get(n + 1..).unwrap_or_default()
                    }
                    _ => return,
                }
            }
            None => bytes,
        };
        let bearer = Bearer(Arc::new(crate::secret::Secret::from_slice(
            token.trim_ascii(),
        )));
        req.headers_mut().remove(header);
        req.extensions_mut().insert(bearer);
    }
}

/// Requests in flight on one connection, and since when it has had none.
///
/// Ending a request only updates these counters: it neither wakes the
/// connection nor touches its timer, so the idle check costs a request
/// nothing. The connection's idle timer is always armed instead, and when it
/// fires it looks at the counters and re-arms (see [`Limited::poll_idle`]).
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` when the last request ended.
    idle_since_ms: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn idle_since(&self) -> Instant {
        self.epoch + std::time::Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }
}

/// Marks one request in flight until dropped (when its response body ends).
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl RequestGuard {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.idle_since_ms.store(ms, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connect info of a [`Limited`] stream: the inner stream's info and the
/// connection's request count. [`InFlightLayer`] takes it apart before any
/// handler runs.
#[derive(Debug, Clone)]
pub struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I> Tracked<I> {
    /// The inner stream's connect info.
    pub fn inner(&self) -> &I {
        &self.inner
    }
}

/// A connection admitted under a listener's limits.
#[derive(Debug)]
pub struct Limited<S> {
    inner: S,
    activity: Arc<Activity>,
    idle_timeout: std::time::Duration,
    idle: Pin<Box<Sleep>>,
    _admission: Admission,
}

impl<S> Limited<S> {
    /// Serves `inner` under `admission`, which is given back when the
    /// connection closes.
    pub fn new(inner: S, admission: Admission) -> Self {
        let activity = Arc::new(Activity::new());
        let idle_timeout = admission.limits().idle_timeout;
        let idle = Box::pin(tokio::time::sleep_until(activity.epoch + idle_timeout));
        Self {
            inner,
            activity,
            idle_timeout,
            idle,
            _admission: admission,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Ready with an error once the connection has had no request in flight
    /// for the idle timeout; hyper then closes it.
    ///
    /// The timer always stands armed. When it fires with requests in flight
    /// it is pushed a whole timeout ahead; with none, to the timeout after
    /// the last one ended, and the connection is closed once that has
    /// passed. So an idle connection closes exactly one timeout after its
    /// last request, and a busy one costs a timer event per timeout.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let next = if self.activity.in_flight.load(Ordering::Acquire) > 0 {
                Instant::now() + self.idle_timeout
            } else {
                let deadline = self.activity.idle_since() + self.idle_timeout;
                if deadline <= Instant::now() {
                    return Poll::Ready(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no request in flight for the idle timeout",
                    ));
                }
                deadline
            };
            // Polled again at once so the re-armed timer registers this task.
            self.idle.as_mut().reset(next);
        }
    }
}

impl<S: Connected> Connected for Limited<S> {
    type ConnectInfo = Tracked<S::ConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        Tracked {
            inner: self.inner.connect_info(),
            activity: self.activity.clone(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        // hyper keeps reading a connection for as long as it serves it, so
        // the read side is where an idle connection is noticed.
        if let Poll::Ready(e) = this.poll_idle(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A tonic server builder for [`Limited`] connections whose inner stream's
/// connect info is `I`: HTTP/2 keepalive PINGs close half-open connections,
/// and the [`InFlightLayer`] feeds the idle timeout and hands handlers `I`
/// in the request extensions, exactly as if the stream were served bare.
/// `I` must name the served streams' inner connect info (a mismatch is
/// logged as an error on every request).
pub fn builder<I>(limits: &Limits) -> tonic::transport::Server<Stack<InFlightLayer<I>, Identity>> {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .layer(InFlightLayer::default())
}

/// Counts requests per [`Limited`] connection and restores the inner connect
/// info `I` for handlers.
#[derive(Debug)]
pub struct InFlightLayer<I>(PhantomData<fn() -> I>);

impl<I> Default for InFlightLayer<I> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<I> Clone for InFlightLayer<I> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<S, I> tower::Layer<S> for InFlightLayer<I> {
    type Service = InFlight<S, I>;
    fn layer(&self, inner: S) -> Self::Service {
        InFlight {
            inner,
            _info: PhantomData,
        }
    }
}

/// The service [`InFlightLayer`] makes.
#[derive(Debug)]
pub struct InFlight<S, I> {
    inner: S,
    _info: PhantomData<fn() -> I>,
}

impl<S: Clone, I> Clone for InFlight<S, I> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _info: PhantomData,
        }
    }
}

type Body = tonic::body::Body;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, I> tower::Service<http::Request<Body>> for InFlight<S, I>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    I: Clone + Send + Sync + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        Bearer::take(&mut req, "authorization", Some("Bearer"));
        let guard = req.extensions_mut().remove::<Tracked<I>>().map(|t| {
            req.extensions_mut().insert(t.inner);
            RequestGuard::begin(t.activity)
        });
        if guard.is_none() {
            // Only a server built for another connection type gets here; its
            // busy connections would be closed as idle.
            tracing::error!("a request arrived without its connection's activity");
        }
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(match guard {
                // The request stays in flight until its response body has
                // ended: a watch stream keeps its connection busy.
                Some(guard) => response.map(|body| {
                    Body::new(GuardedBody {
                        body,
                        _guard: guard,
                    })
                }),
                None => response,
            })
        })
    }
}

/// A response body that keeps its request in flight until it is dropped.
struct GuardedBody {
    body: Body,
    _guard: RequestGuard,
}

impl http_body::Body for GuardedBody {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
