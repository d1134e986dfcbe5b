//! A TLS connection that tells tonic who the peer is, so handlers can read
//! the client's certificate per request.

use rustls_pki_types::CertificateDer;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// What the chokepoint learns about a TLS peer: its address and, when it
/// presented one, its verified leaf certificate, parsed once per connection.
#[derive(Clone, Debug)]
pub struct TlsConnInfo {
    /// The peer's address; private, so it cannot drift from `source`.
    remote: Option<SocketAddr>,
    /// The verified client leaf, if any. Shared: tonic copies the connect
    /// info into every request, and an HTTP/2 connection carries thousands.
    pub peer: Option<Arc<PeerLeaf>>,
    /// `remote` as audit records name a request's source, written once per
    /// connection rather than per request.
    source: Arc<str>,
}

impl TlsConnInfo {
    /// The facts of a connection from `remote` whose client presented
    /// `peer` (if any).
    pub fn new(remote: Option<SocketAddr>, peer: Option<Arc<PeerLeaf>>) -> Self {
        let source = remote.map_or_else(|| "tcp:unknown".to_owned(), |a| format!("tcp:{a}"));
        Self {
            remote,
            peer,
            source: source.into(),
        }
    }

    /// The peer's address, if known.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// The request's source as audit records write it: `tcp:ADDR:PORT`.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// A verified client leaf with what the gate reads from it on every request:
/// parsed at the handshake instead of per request.
#[derive(Debug)]
pub struct PeerLeaf {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The SPIFFE ID in its URI SAN ([`peer_spiffe_id`]), if it has one.
    pub id: Option<crate::id::SpiffeId>,
    /// notBefore and notAfter, Unix seconds; `None` if it does not parse.
    validity: Option<(i64, i64)>,
    /// Its `x5t#S256` thumbprint, computed when a bound token first asks.
    x5t: std::sync::OnceLock<String>,
}

impl PeerLeaf {
    /// Parses `der` once.
    pub fn new(der: Vec<u8>) -> Self {
        use x509_parser::prelude::*;
        let validity = X509Certificate::from_der(&der).ok().map(|(_, c)| {
            (
                c.validity().not_before.timestamp(),
                c.validity().not_after.timestamp(),
            )
        });
        let id = peer_spiffe_id(&der);
        Self {
            der,
            id,
            validity,
            x5t: std::sync::OnceLock::new(),
        }
    }

    /// The certificate's `x5t#S256` thumbprint (RFC 8705 §3.1): base64url,
    /// unpadded, of the SHA-256 of its DER. Computed once per connection.
    pub fn x5t(&self) -> &str {
        self.x5t.get_or_init(|| {
            use base64::Engine;
            let d = ring::digest::digest(&ring::digest::SHA256, &self.der);
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
        })
    }

    /// Whether the certificate is within its validity at `now` (Unix
    /// seconds). The chain was verified at the handshake, but an HTTP/2
    /// connection outlives certificates.
    pub fn valid_at(&self, now: u64) -> bool {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        self.validity
            .is_some_and(|(from, until)| from <= now && now < until)
    }
}

/// A server-side TLS stream carrying [`TlsConnInfo`].
#[derive(Debug)]
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    info: TlsConnInfo,
}

impl TlsConn {
    /// Wraps an accepted stream, capturing the peer's verified chain.
    pub fn new(inner: TlsStream<TcpStream>) -> Self {
        let (tcp, session) = inner.get_ref();
        let info = TlsConnInfo::new(
            tcp.peer_addr().ok(),
            session
                .peer_certificates()
                .and_then(|cs| cs.first())
                .map(|c: &CertificateDer<'_>| Arc::new(PeerLeaf::new(c.as_ref().to_vec()))),
        );
        Self { inner, info }
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = TlsConnInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
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

/// The SPIFFE ID in a certificate's URI SAN, if it has exactly one that parses.
pub fn peer_spiffe_id(leaf_der: &[u8]) -> Option<crate::id::SpiffeId> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(leaf_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let first = uris.next()?;
    // The X509-SVID standard allows exactly one URI SAN; two is ambiguous.
    if uris.next().is_some() {
        return None;
    }
    crate::id::SpiffeId::parse(first).ok()
}
